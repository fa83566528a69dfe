"""Every Python snippet in the README and the guide runs as shown, against a local API."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import sys
from pathlib import Path

import pytest

from aioprefactor.testing import LocalPrefactor

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
GUIDE = ROOT / "docs" / "guide.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def blocks(language: str, document: Path = README) -> list[str]:
    """Return a document's fenced blocks in `language`, in order."""
    return [body for lang, body in BLOCK.findall(document.read_text()) if lang == language]


SNIPPETS = [*blocks("python"), *blocks("python", GUIDE)]
# What a snippet imports that an extra provides, by the top-level module's name.
OPTIONAL = {
    "langchain_core": "langchain",
    "langgraph": "test-integrations",
    "agents": "openai-agents",
    "opentelemetry": "opentelemetry",
    "pydantic_ai": "test-integrations",
}
IMPORT = re.compile(r"^\s*(?:from|import)\s+([A-Za-z_]\w*)", re.MULTILINE)


def skip_without_extras(snippet: str) -> None:
    """Skip a snippet whose optional framework is not installed (in CI, fail instead)."""
    for module in sorted(set(IMPORT.findall(snippet)) & set(OPTIONAL)):
        if importlib.util.find_spec(module) is None:
            reason = f"needs pip install -e '.[{OPTIONAL[module]}]' ({module} is missing)"
            if os.environ.get("CI"):
                pytest.fail(reason)
            pytest.skip(reason)


SCRIPTS = [block for block in SNIPPETS if "def test_" not in block]
TESTS = [block for block in SNIPPETS if "def test_" in block]


async def run(*args: str, cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """Run a Python subprocess; return its exit code and its combined output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, output.decode()


def test_the_readme_has_the_snippets_this_test_runs() -> None:
    """The README holds scripts, a pytest example and its pytest configuration."""
    assert len(blocks("python")) >= 4
    assert 2 == len(TESTS)
    assert any("asyncio_mode" in block for block in blocks("toml"))


@pytest.mark.parametrize("snippet", SCRIPTS, ids=[f"script-{n}" for n in range(len(SCRIPTS))])
async def test_a_readme_script_runs_against_the_local_api(tmp_path: Path, snippet: str) -> None:
    """The script exits 0 with PREFACTOR_API_URL/TOKEN set, and records what it says it does."""
    skip_without_extras(snippet)
    script = tmp_path / "snippet.py"
    script.write_text(snippet)
    async with LocalPrefactor() as api:
        env = {**os.environ, "PREFACTOR_API_URL": api.url, "PREFACTOR_API_TOKEN": api.token}
        code, output = await run(str(script), cwd=tmp_path, env=env)
        assert 0 == code, output
        if "LocalPrefactor(" in snippet:
            # It records on a local API of its own and prints what it shows.
            assert [] == api.instances()
            assert output.strip()
        elif "agent_instance(" in snippet:
            assert api.instances(), "the snippet recorded no run"
            assert {"complete", "failed"} >= {i["status"] for i in api.instances()}
        elif "ping()" in snippet:
            assert [] != [r for r in api.requests if r.route == "ping"]


@pytest.mark.parametrize("example", TESTS, ids=["readme", "guide"])
async def test_a_pytest_example_passes(tmp_path: Path, example: str) -> None:
    """A pytest example passes with the README's configuration, in a project of its own."""
    (tmp_path / "pyproject.toml").write_text(
        next(block for block in blocks("toml") if "asyncio_mode" in block)
    )
    (tmp_path / "test_agent.py").write_text(example)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFACTOR_")}
    code, output = await run("-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=tmp_path, env=env)
    assert 0 == code, output
    assert "1 passed" in output
