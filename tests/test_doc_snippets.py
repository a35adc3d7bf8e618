"""The pages' examples run as a reader copies them, on look-alike data, and say what they do.

README's MONAI-chain lines, docs/DESIGN.md's public-surface example, docs/distributed.md's re-dealt
shards, what ``fastpipe/runtime/_cuda_extra.py`` prints, and what a cache fill error names.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import fastpipe

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"


def _blocks(doc: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", (REPO / "docs" / doc).read_text(), flags=re.S)


@pytest.mark.timeout(120)
def test_design_public_surface_example_runs(tmp_path):
    """docs/DESIGN.md's example runs as written, on this machine's device, over two look-alike volumes."""
    from fastpipe.datasets import synthesize

    root = synthesize(tmp_path / "spleen", preset="spleen-small", seed=0, progress=False, num_volumes=2)
    code = _blocks("DESIGN.md", "python")[0].replace("    ...", "    break")
    scope = {"root": root}
    exec(compile(code, "DESIGN.md", "exec"), scope)  # noqa: S102 - the page's own code
    assert tuple(scope["batch"]["image"].shape) == (8, 1, 96, 96, 96)
    scope["loader"].close()
    scope["ds"].close()


@pytest.mark.timeout(120)
def test_readme_monai_chain_snippet_runs(tmp_path, capsys):
    """README's "A MONAI chain, handed in as it is": its two lines over docs/monai-chains.md's chain."""
    pytest.importorskip("monai.transforms")
    from fastpipe.datasets import synthesize

    root = synthesize(tmp_path / "spleen", preset="spleen-small", seed=0, progress=False, num_volumes=2)
    scope: dict = {"fp": fastpipe, "train_files": fastpipe.datasets.load_decathlon_datalist(root)}
    exec(compile(_blocks("monai-chains.md", "python")[0], "monai-chains.md", "exec"), scope)  # noqa: S102
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    snippet = next(b for b in blocks if "train_transforms" in b)
    exec(compile(snippet, "README.md", "exec"), scope)  # noqa: S102 - the README's own code
    assert "plan:" in capsys.readouterr().out
    scope["ds"].close()


@pytest.mark.timeout(120)
def test_distributed_reshard_pattern_runs(tmp_path):
    """docs/distributed.md's re-dealt shards: the loop runs as written on one process (no group)."""
    from fastpipe import transforms as T
    from fastpipe.datasets import synthesize

    root = synthesize(tmp_path / "spleen", preset="spleen-tiny", seed=0, progress=False, num_volumes=2)
    keys = ["image", "label"]
    chain = [
        T.LoadImaged(keys),
        T.EnsureChannelFirstd(keys),
        T.FgBgToIndicesd("label"),
        T.RandCropByPosNegLabeld(keys, label_key="label", spatial_size=(16, 16, 16), num_samples=2),
    ]
    code = _blocks("distributed.md", "python")[1].replace('"/scratch/fastpipe"', repr(str(tmp_path / "c")))
    scope = {
        "fp": fastpipe,
        "data": fastpipe.datasets.load_decathlon_datalist(root),
        "chain": chain,
        "epochs": 2,
    }
    exec(compile(code, "distributed.md", "exec"), scope)  # noqa: S102
    assert len(scope["shard"]) == 2 and (tmp_path / "c").is_dir()


def test_cuda_extra_script_prints_what_the_docs_say():
    """README and docs/gpu-check.md: the script prints the extra's name, nothing for a CPU-only torch."""
    import torch

    out = subprocess.run(
        [sys.executable, "fastpipe/runtime/_cuda_extra.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    if torch.version.cuda is None:
        assert out.stdout.strip() == ""
        assert "and nothing for a CPU-only torch" in " ".join(README.read_text().split())
        assert "(nothing for a CPU-only torch)" in (REPO / "docs" / "gpu-check.md").read_text()
    else:
        assert out.stdout.strip() in {"gpu-cu12", "gpu-cu13"}


def test_errors_doc_says_what_a_fill_error_names(tmp_path):
    """A cache fill error names the item and file, not the transform: the docs must not promise it."""
    from fastpipe import transforms as T
    from fastpipe.cache import CacheFillError
    from fastpipe.datasets import synthesize

    root = synthesize(tmp_path / "spleen", preset="spleen-tiny", seed=0, progress=False, num_volumes=2)
    data = fastpipe.datasets.load_decathlon_datalist(root)
    Path(data[1]["label"]).unlink()
    keys = ["image", "label"]
    with pytest.raises(CacheFillError) as caught:
        fastpipe.CacheDataset(data, [T.LoadImaged(keys), T.EnsureChannelFirstd(keys)], progress=False)
    err = caught.value
    assert (err.index, err.file, err.key) == (1, data[1]["label"], "label")
    if err.transform is None:
        assert "a cache fill error leaves `err.transform` at `None`" in " ".join(
            (REPO / "docs" / "errors.md").read_text().split()
        )
        assert "failed and, on reads, the transform" in " ".join(README.read_text().split())
