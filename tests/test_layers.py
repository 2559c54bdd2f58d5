"""Serving stays light: answering a question from a ready index (what `python -m refrag_lib generate` and the
playground do) loads no training or benchmark module. The same list is import-linter's contract in
pyproject.toml (`make lint` checks every import statement; this checks what a real answer loads)."""

import json
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).parents[1]

ANSWER_ONE_QUESTION = """
import json, sys
sys.path.insert(0, sys.argv[1])
from conftest import tiny_qa
from refrag_lib.answering import generate_answer
from refrag_lib.chunk_store import build_chunk_store
from refrag_lib.ready_index import build_ready_index, load_ready_index
import refrag_lib.course.playground
out = sys.argv[2]
model, passages, retriever, index, _ = tiny_qa(k=4, top_k=2)
keys = build_chunk_store(model, index.passages, progress=False, retriever=retriever)
keys.save(out + "/keys/chunk_store.safetensors")
build_ready_index(out, model, index, "test", p=0.25, top_k=2, selector="question", keys_from=out + "/keys",
                  progress=False)
answer = generate_answer(load_ready_index(out, model, retriever, {}), "Which river at City_003?", max_new_tokens=2,
                         repeats=1)
print(json.dumps({"ttft_ms": answer["ttft_ms"], "modules": sorted(sys.modules)}))
"""


def forbidden_for_serving() -> set[str]:
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    serving = next(c for c in contracts if c["name"].startswith("Serving"))
    assert "refrag_lib.answering" in serving["source_modules"] and "refrag_lib.train" in serving["forbidden_modules"]
    return set(serving["forbidden_modules"])


def test_answering_a_question_loads_no_training_or_benchmark_module(tmp_path):
    done = subprocess.run([sys.executable, "-c", ANSWER_ONE_QUESTION, str(ROOT / "tests"), str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    loaded = set(result["modules"])
    assert result["ttft_ms"] > 0 and {"refrag_lib.answering", "refrag_lib.course.playground"} <= loaded
    assert loaded & forbidden_for_serving() == set()
