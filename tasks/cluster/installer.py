"""Kube-OVN's install.sh, the manual's way of installing it, made safe to automate.

The script is taken from a configured URL (a pinned release, not a branch) or
a local file, and its sha256 is compared with the expected one before anything
runs: an unverified script is never executed. It runs as `bash <file>` (an
argv, no shell string) in a private temp directory (it writes its manifests
into the working directory), with only the variables it needs in its
environment, and a timeout. It calls `kubectl`, which must be on the
controller's PATH; in a pod it uses the service account, outside it the
kubeconfig nicflow uses.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from tasks.cluster.surface import ExecResult
from workflows.errors import PermanentError, StepTimeout, TransientError

MAX_SCRIPT_BYTES = 4_000_000
SHA256 = r"^[0-9a-f]{64}$"
SCRIPT_URL = r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?/[A-Za-z0-9._~/%+-]*$"
SCRIPT_FILE = r"^/([A-Za-z0-9._-]+/)*[A-Za-z0-9._-]+$"
ENV_NAME = r"^[A-Z][A-Z0-9_]{0,63}$"
PASSED_THROUGH = ("PATH", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "KUBECONFIG", "LANG")


def fetch_script(*, url: str, file: str, timeout: float) -> tuple[bytes, str]:
    """The script's bytes and where they came from. Exactly one source must be set."""
    if bool(url) == bool(file):
        raise PermanentError("give exactly one of install_url and install_file for Kube-OVN's install.sh")
    if file:
        if not re.fullmatch(SCRIPT_FILE, file) or ".." in file.split("/"):
            raise PermanentError(f"install_file {file!r} must be an absolute, normalised path")
        try:
            with open(file, "rb") as handle:
                data = handle.read(MAX_SCRIPT_BYTES + 1)
        except OSError as exc:
            raise PermanentError(f"cannot read install_file {file}: {exc.strerror}") from None
        source = file
    else:
        if not re.fullmatch(SCRIPT_URL, url):
            raise PermanentError(f"install_url {url!r} is not an http(s) URL of a file")
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - scheme checked above
                data = response.read(MAX_SCRIPT_BYTES + 1)
        except urllib.error.HTTPError as exc:
            error = PermanentError if 400 <= exc.code < 500 else TransientError
            raise error(f"downloading {url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise TransientError(f"downloading {url}: {exc}") from None
        source = url
    if len(data) > MAX_SCRIPT_BYTES:
        raise PermanentError(f"{source} is larger than {MAX_SCRIPT_BYTES} bytes: not an install script")
    return data, source


def verify_script(data: bytes, *, sha256: str, source: str) -> None:
    """Refuse (permanently) a script whose digest is not the pinned one."""
    if not re.fullmatch(SHA256, sha256 or ""):
        raise PermanentError("install_sha256 must be the 64 hex digits of the script's sha256; "
                             "nicflow never runs an install script it has not verified")
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise PermanentError(f"{source} has sha256 {actual}, not the expected {sha256}: not running it")


def run_script(script: bytes, env: Mapping[str, str], *, timeout: float, kubeconfig: str | None = None) -> ExecResult:
    """`bash install.sh` in a private directory; `env` adds the script's settings."""
    for name, value in env.items():
        if not re.fullmatch(ENV_NAME, name) or "\x00" in value or "\n" in value:
            raise PermanentError(f"environment variable {name}={value!r} is not allowed for the install script")
    with tempfile.TemporaryDirectory(prefix="nicflow-install-") as work:
        path = Path(work) / "install.sh"
        path.write_bytes(script)
        path.chmod(0o700)
        base = {k: os.environ[k] for k in PASSED_THROUGH if k in os.environ}
        base.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        if kubeconfig:
            base["KUBECONFIG"] = kubeconfig
        try:
            done = subprocess.run(["bash", str(path)], cwd=work, env={**base, "HOME": work, **env},
                                  capture_output=True, text=True, errors="replace", timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise StepTimeout(f"Kube-OVN's install.sh did not finish within {timeout:g}s") from None
        except FileNotFoundError:
            raise PermanentError("bash is not installed on the controller: cannot run Kube-OVN's install.sh") from None
    return ExecResult(done.returncode, done.stdout, done.stderr)
