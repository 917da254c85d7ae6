"""The om command line."""
