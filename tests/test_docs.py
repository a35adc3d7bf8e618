"""The README and docs/ speak of the project alone, and every command they give exists.

- No build-process wording (sessions, lent machines, tool names, folders outside the repository,
  carried wheels) in README.md or docs/*.md.
- Every ``make X`` is a Makefile target, every extra in ``pip install ".[X]"`` is in pyproject.toml,
  every ``fastpipe X`` is a subcommand of the console script pyproject declares, every
  ``python -m benchmarks.X`` is a module of the checkout.
- The package metadata a user sees: a distribution name that is not PyPI's unrelated ``fastpipe``,
  the version ``fastpipe --version`` prints, the licence file.
"""

from __future__ import annotations

import ast
import builtins
import re
from pathlib import Path

import pytest

import fastpipe

try:
    from tomllib import load as _load_toml
except ImportError:  # Python 3.10: setuptools carries a TOML reader
    from setuptools.config.pyprojecttoml import load_file as _load_toml_file

    def _load_toml(f):
        return _load_toml_file(f.name)


REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
with open(REPO / "pyproject.toml", "rb") as _f:
    PYPROJECT = _load_toml(_f)

#: Wording about how the project was built, not what it is (pattern, what it points at).
BUILD_PROCESS = [
    (r"\bsessions?\b", "work sessions"),
    (r"\blent\b|\bloaned?\b", "machines lent to someone"),
    (r"\bwho had\b", "who had which machine"),
    (r"\.\./shared|shared/(DESIGN|STYLE)\.md|/work/(main|wt|shared)\b", "files outside the repository"),
    (r"\bcarr(y|ied|ying)\b[^.\n]{0,40}\bwheels?\b|\bwheels?\b[^.\n]{0,40}\bcarried\b", "carrying wheels"),
    (r"\bworktrees?\b|\bcoordinator\b|\bagents?\b", "how the work was organised"),
    (r"\bgive_back\b|\bfind_string\b|\bissues show\b", "tool names"),
    (
        r"\b(this|earlier|previous|last) round\b|\b(this|earlier|previous|last) round's\b",
        "rounds of the work",
    ),
    (r"\bone command may run\b", "a limit of the machines the work ran on"),
    (r"\bmachine start\b|\bmachine with a time budget\b", "the time a borrowed machine was given"),
]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_docs_describe_the_project_not_how_it_was_built(doc):
    text = doc.read_text()
    found = []
    for pattern, what in BUILD_PROCESS:
        for m in re.finditer(pattern, text, flags=re.I):
            line = text.count("\n", 0, m.start()) + 1
            found.append(f"{doc.name}:{line}: {m.group(0)!r} ({what})")
    assert not found, "build-process wording:\n" + "\n".join(found)


def _makefile_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return {m.group(1) for m in re.finditer(r"^([A-Za-z][\w-]*)\s*:(?!=)", text, flags=re.M)}


def _readme() -> str:
    return (REPO / "README.md").read_text()


def test_every_make_target_in_the_readme_exists():
    named = set(re.findall(r"\bmake ([a-z][\w-]*)", _readme()))
    assert {"test", "bench", "synth"} <= named
    assert named <= _makefile_targets(), named - _makefile_targets()


def test_every_pip_extra_in_the_readme_exists():
    extras = set(PYPROJECT["project"]["optional-dependencies"])
    named = set()
    for spec in re.findall(r"pip install (?:-e )?\"?(?:\.|fastpipe-med)\[([\w,-]+)\]", _readme()):
        named.update(spec.split(","))
    assert {"gpu-cu12", "gpu-cu13", "bench"} <= named
    assert named <= extras, named - extras


def test_every_fastpipe_command_in_the_readme_exists(capsys):
    from fastpipe.cli import _FORWARDED, main

    assert PYPROJECT["project"]["scripts"]["fastpipe"] == "fastpipe.cli:main"
    text = _readme()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    code = [re.sub(r"#.*", "", b) for b in blocks] + re.findall(r"`([^`\n]+)`", text)  # comments are prose
    named = {m for c in code for m in re.findall(r"(?:^|\s|/)fastpipe (--?[a-z-]+|[a-z]+)", c, flags=re.M)}
    subcommands = {"synth", "--version", *_FORWARDED}
    assert {"synth", "--version"} <= named
    assert named <= subcommands, named - subcommands
    assert main(["--version"]) == 0 and fastpipe.__version__ in capsys.readouterr().out


def test_every_benchmark_module_in_the_readme_exists():
    for module in set(re.findall(r"python -m (benchmarks\.[\w.]+)", _readme())):
        assert (REPO / (module.replace(".", "/") + ".py")).is_file(), module


def test_package_metadata():
    project = PYPROJECT["project"]
    assert project["name"] != "fastpipe"  # PyPI's `fastpipe` is an unrelated package
    assert project["version"] == fastpipe.__version__
    assert project["license"] == "Apache-2.0" and project["authors"]
    assert "urls" not in project  # no invented addresses: added once the project has a public home
    assert "Apache License" in (REPO / "LICENSE").read_text()
    assert project["name"] in _readme()


def _blocks(doc: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", (REPO / "docs" / doc).read_text(), flags=re.S)


@pytest.mark.timeout(120)
def test_monai_chains_example_and_its_describe_output(tmp_path):
    """docs/monai-chains.md: the MONAI chain runs as written, and describe() prints what the doc shows."""
    monai_transforms = pytest.importorskip("monai.transforms")
    from fastpipe.datasets import synthesize

    root = synthesize(tmp_path / "spleen", preset="spleen-small", seed=0, progress=False, num_volumes=2)
    scope: dict = {"train_files": fastpipe.datasets.load_decathlon_datalist(root)}
    exec(compile(_blocks("monai-chains.md", "python")[0], "monai-chains.md", "exec"), scope)  # noqa: S102
    steps = list(scope["train_transforms"].transforms)
    pad = monai_transforms.SpatialPadd(scope["keys"], spatial_size=(96, 96, 96))
    chain = [*steps[:6], pad, *steps[6:], monai_transforms.RandGaussianSmoothd("image")]
    ds = fastpipe.CacheDataset(scope["train_files"], chain, num_workers=1, progress=False)
    shown = re.findall(r"```\n(plan: .*?)```", (REPO / "docs" / "monai-chains.md").read_text(), flags=re.S)
    assert shown, "docs/monai-chains.md lost its describe() output"
    printed = ds.describe().splitlines()

    def steps_only(lines):  # the bytes line depends on the data's exact voxels
        return [line.rstrip() for line in lines if not line.startswith("bytes per cached entry")]

    assert steps_only(printed) == steps_only(shown[0].splitlines())
    assert (
        "7 cached, 1 batched (+6 fused), 1 per item; fast path ends at step 15 RandGaussianSmoothd"
        in repr(ds)
    )


#: Names a doc's script may leave to the reader: their data list, their model, their epoch count.
PLACEHOLDERS = {"data", "train_files", "root", "net", "epochs"}


def _undefined_names(code: str) -> set[str]:
    tree = ast.parse(code)
    defined, used = set(dir(builtins)), set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            defined.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.Name):
            (used if isinstance(node.ctx, ast.Load) else defined).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, ast.arg):
            defined.add(node.arg)
    return used - defined


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_script_in_the_docs_imports_what_it_uses(doc):
    """A ```python block that imports is a script a reader copies: it must define every name but the data."""
    for code in re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S):
        if re.search(r"^(import|from) ", code, flags=re.M):
            assert _undefined_names(code) <= PLACEHOLDERS, (doc.name, _undefined_names(code) - PLACEHOLDERS)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("doc", ["random-suffix.md", "errors.md", "cache-footprint.md"])
def test_doc_snippets_run(doc, tmp_path, capsys):
    """The pages' snippets run as written on two look-alike volumes (``data`` and ``chain`` are the reader's)."""
    from fastpipe import transforms as T
    from fastpipe.datasets import synthesize

    root = synthesize(tmp_path / "spleen", preset="spleen-small", seed=0, progress=False, num_volumes=2)
    keys = ["image", "label"]
    chain = [
        T.LoadImaged(keys),
        T.EnsureChannelFirstd(keys),
        T.FgBgToIndicesd("label"),
        T.RandCropByPosNegLabeld(keys, label_key="label", spatial_size=(96, 96, 96), num_samples=2),
    ]
    scope = {"fp": fastpipe, "data": fastpipe.datasets.load_decathlon_datalist(root), "chain": chain}
    for code in _blocks(doc, "python"):
        exec(compile(code, doc, "exec"), scope)  # noqa: S102 - the page's own code
    if doc == "cache-footprint.md":  # the keys the page's comment shows
        entry = scope["ds"].stats()["entry_bytes"]
        assert set(entry) == {"entries", "bytes_per_entry", "by_tensor", "background"}
        assert entry["by_tensor"]["label_bg_indices"] == 8 and entry["background"] == {
            "rejection": 2,
            "list": 0,
        }
        assert "bytes per cached entry" in capsys.readouterr().out


def test_benchmarks_readme_names_every_script():
    """benchmarks/README.md says what each script measures: none is left out, none is gone."""
    text = (REPO / "benchmarks" / "README.md").read_text()
    named = set(re.findall(r"`(\w+\.py)`", text))
    scripts = {p.name for p in (REPO / "benchmarks").glob("*.py")} - {"__init__.py"}
    assert scripts <= named, scripts - named
    assert named <= scripts | {"NAME.py"}, named - scripts


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_result_file_the_docs_cite_exists(doc):
    """A figure's JSON (or chart) named in full is in benchmarks/results/ ("-run2.json" shorthands aside)."""
    results = REPO / "benchmarks" / "results"
    named = set(re.findall(r"(?<![\w<>-])([a-z0-9][\w.-]*\.(?:json|png))\b", doc.read_text()))
    named -= {"dataset.json", "dataset_fingerprint.json"}  # an MSD folder's files and nnU-Net's
    missing = {n for n in named if not (results / n).is_file() and not (REPO / n).is_file()}
    assert not missing, missing


def test_random_suffix_table_lists_every_translated_step_after_the_crop():
    """docs/random-suffix.md's table: a MONAI class fastpipe translates is not among "other MONAI transforms"."""
    from fastpipe.transforms._translate import REGISTRY

    text = (REPO / "docs" / "random-suffix.md").read_text()
    table = text[text.index("## Supported transforms") :].split("\n\n")[1]
    named = {n for row in table.splitlines()[2:] for n in re.findall(r"`(\w+)`", row.split("|")[1])}
    prefix_only = {"LoadImaged", "EnsureChannelFirstd", "Orientationd", "Spacingd", "ScaleIntensityRanged"}
    prefix_only |= {"CropForegroundd", "FgBgToIndicesd"}  # deterministic steps that only the cache runs
    assert set(REGISTRY) - prefix_only <= named, set(REGISTRY) - prefix_only - named


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_fastpipe_name_the_docs_give_exists(doc):
    """`fastpipe.x.y`, `fp.X` and `T.X` in a page resolve to a module, class, function or constant."""
    import importlib

    from fastpipe import transforms

    text, missing = doc.read_text(), []
    for name in set(re.findall(r"`(fastpipe(?:\.[A-Za-z_]\w*)+)", text)):
        parts, obj, at = name.split("."), fastpipe, 1
        for at in range(len(parts), 0, -1):  # the longest importable prefix, then attributes
            try:
                obj = importlib.import_module(".".join(parts[:at]))
                break
            except ImportError:
                continue
        for part in parts[at:]:
            obj = getattr(obj, part, missing)
        if obj is missing:
            missing.append(name)
    for module, prefix in ((fastpipe, "fp"), (transforms, "T")):
        for name in set(re.findall(rf"\b{prefix}\.([A-Za-z_][\w.]*\w)", text)):
            obj = module
            for part in name.split("."):
                obj = getattr(obj, part, missing)
            if obj is missing:
                missing.append(f"{prefix}.{name}")
    assert not missing, sorted(missing)


def test_the_readme_leads_to_every_page_of_docs():
    """A newcomer reaches each docs/ page from the README."""
    pages = {p.name for p in (REPO / "docs").glob("*.md")}
    assert {p for p in pages if p not in _readme()} == set()
