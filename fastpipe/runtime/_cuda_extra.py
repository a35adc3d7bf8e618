"""Which CuPy extra matches the installed torch: ``gpu-cu12`` (cupy-cuda12x) or ``gpu-cu13`` (cupy-cuda13x).

The CUDA kernels run through CuPy, whose wheel is built for one CUDA major version. A CuPy for another
major version than torch's fails to load and CUDA tensors quietly take the torch path, so the extra
follows ``torch.version.cuda``. Run as a script (``python fastpipe/runtime/_cuda_extra.py``) it prints the
extra's name, or nothing for a CPU-only torch; the Makefile's install uses that.
"""

from __future__ import annotations

EXTRAS = {"12": "gpu-cu12", "13": "gpu-cu13"}
PACKAGES = {"gpu-cu12": "cupy-cuda12x", "gpu-cu13": "cupy-cuda13x"}


def cupy_extra(torch_cuda: str | None) -> str | None:
    """The extra for torch's CUDA version string (``torch.version.cuda``); ``None`` for a CPU-only torch.

    Example:
        >>> cupy_extra("12.8"), cupy_extra("13.0"), cupy_extra(None)
        ('gpu-cu12', 'gpu-cu13', None)
    """
    if not torch_cuda:
        return None
    major = str(torch_cuda).split(".")[0]
    if major not in EXTRAS:
        raise ValueError(
            f"torch is built for CUDA {torch_cuda}; fastpipe has CuPy extras for CUDA {sorted(EXTRAS)} only"
        )
    return EXTRAS[major]


def install_hint(torch_cuda: str | None) -> str:
    """How to install the CuPy that matches torch's CUDA: the wheel itself, or the extra from a checkout.

    Never ``pip install fastpipe[...]``: ``fastpipe`` on PyPI is an unrelated project (the
    distribution is ``fastpipe-med``, not released), and ``gpu`` is the CUDA 12 spelling.

    Example:
        >>> install_hint("13.0")
        'pip install cupy-cuda13x (the extra fastpipe[gpu-cu13]: pip install -e ".[gpu-cu13]" in the checkout)'
    """
    try:
        extra = cupy_extra(torch_cuda)
    except ValueError as err:
        return str(err)
    if extra is None:
        return "torch is a CPU-only build: the CUDA kernels need a CUDA build of torch and its CuPy"
    return f'pip install {PACKAGES[extra]} (the extra fastpipe[{extra}]: pip install -e ".[{extra}]" in the checkout)'


def cupy_mismatch(torch_cuda: str | None, cupy_cuda_runtime: int | None) -> str | None:
    """Why the installed CuPy cannot serve torch's CUDA (``None`` when they agree or either is absent).

    ``cupy_cuda_runtime`` is ``cupy.cuda.runtime.runtimeGetVersion()``, e.g. ``12080`` for CUDA 12.8.
    """
    if not torch_cuda or cupy_cuda_runtime is None:
        return None
    torch_major, cupy_major = int(str(torch_cuda).split(".")[0]), int(cupy_cuda_runtime) // 1000
    if torch_major == cupy_major:
        return None
    return f"CuPy is built for CUDA {cupy_major} but torch for CUDA {torch_cuda}: {install_hint(torch_cuda)}"


def main() -> None:
    """Print the extra matching the importable torch (nothing for a CPU-only torch)."""
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]  # run as a script: no shadowing
    import torch

    try:
        extra = cupy_extra(torch.version.cuda)
    except ValueError as err:  # installs go on without CuPy: the torch path still runs
        print(f"fastpipe: {err}", file=sys.stderr)
        return
    if extra:
        print(extra)


if __name__ == "__main__":
    main()
