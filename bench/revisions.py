"""Source trees and interpreters for `--compare`: a commit's files in a temp dir, run by a venv that has
its dependencies.

The tree is exported with `git archive` rather than `git worktree add`: same files, but the repository
is only read (no worktree entries to prune if a run is interrupted, nothing for others sharing the
checkout to trip over). The bridge runs from the exported tree via PYTHONPATH, which Python searches
before the editable install of this checkout.

Interpreters: a commit whose runtime dependencies (`[project] dependencies` plus the `fast` extra) are all
satisfied by this venv runs on this venv's Python (what a fresh venv would install, give or take newer
releases); otherwise on a venv made once per distinct set and kept under the cache dir
(`$XDG_CACHE_HOME/bridge-bench/venv-<hash>`), so a repeat run costs nothing.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys
import tarfile
import tomllib
from collections.abc import Sequence
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

from bench.daemon import BridgeCode

WORKING_TREE = (
    ".",
    "WORKTREE",
)  # a side of --compare that means this checkout as it is, uncommitted edits included
REPO = Path(__file__).resolve().parent.parent


def parse_compare(text: str, extra: str | None = None) -> tuple[str, str]:
    """`--compare A,B` or `--compare A B` -> (A, B)."""
    parts = (
        [p.strip() for p in text.split(",") if p.strip()] if extra is None else [text.strip(), extra.strip()]
    )
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"--compare takes two revisions, A,B or A B: {text!r}")
    return parts[0], parts[1]


def resolve(rev: str, repo: Path = REPO) -> str | None:
    """The full commit id of `rev`, or None for the working tree."""
    if rev in WORKING_TREE:
        return None
    done = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
        cwd=repo,
        check=False,
    )
    if done.returncode != 0:
        raise ValueError(f"not a commit in {repo}: {rev!r}")
    return done.stdout.strip()


def export_tree(commit: str, dest: Path, repo: Path = REPO) -> Path:
    """The commit's files under `dest` (created); returns `dest`."""
    dest.mkdir(parents=True)
    with subprocess.Popen(
        ["git", "archive", "--format=tar", commit], stdout=subprocess.PIPE, cwd=repo
    ) as proc:
        assert proc.stdout is not None
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            tar.extractall(dest, filter="data")
    if proc.returncode != 0:
        raise RuntimeError(f"git archive {commit} failed ({proc.returncode})")
    return dest


def runtime_requirements(pyproject_text: str) -> list[str]:
    """What `bridge serve` needs: the project's dependencies plus its `fast` extra (uvloop), sorted."""
    project = tomllib.loads(pyproject_text).get("project", {})
    deps = list(project.get("dependencies", []))
    deps += list(project.get("optional-dependencies", {}).get("fast", []))
    return sorted(deps)


def requirements_key(requirements: Sequence[str]) -> str:
    blob = json.dumps({"python": sys.version_info[:2], "requirements": list(requirements)})
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def satisfied_here(requirements: Sequence[str]) -> bool:
    """Whether this interpreter already has every requirement (those whose markers apply)."""
    for text in requirements:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            return False
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            version = importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            return False
        if not req.specifier.contains(version, prereleases=True):
            return False
    return True


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bridge-bench"


def venv_python(requirements: Sequence[str], cache: Path) -> str:
    """A venv with exactly these requirements installed (made on first use, then reused)."""
    venv = cache / f"venv-{requirements_key(requirements)}"
    python = venv / "bin" / "python"
    if (venv / ".ready").exists():
        return str(python)
    cache.mkdir(parents=True, exist_ok=True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *requirements], check=True)
    (venv / ".ready").write_text("\n".join(requirements) + "\n")
    return str(python)


def bridge_code(rev: str, workdir: Path, cache: Path | None = None) -> BridgeCode:
    """How to run the bridge of `rev` (exported under `workdir`), with the interpreter it needs."""
    commit = resolve(rev)
    if commit is None:
        return BridgeCode(label="working tree")
    tree = workdir / f"tree-{commit[:12]}"
    if not tree.exists():  # `--compare X,X` exports the commit once and runs it for both sides
        export_tree(commit, tree)
    wanted = runtime_requirements((tree / "pyproject.toml").read_text())
    python = sys.executable if satisfied_here(wanted) else venv_python(wanted, cache or cache_dir())
    return BridgeCode(python=python, source=tree, label=f"{rev} ({commit[:10]})")
