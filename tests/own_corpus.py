"""A corpus the course did not make, in the format of the most copied public REFRAG code.

Passages are plain lines of a .txt file; questions are {"question": ..., "answers": [...]} lines with
no gold passage id. The template differs from data/ on purpose: ships and observatories instead of
cities and rivers, names made of syllables instead of Kind_NNN ids, facts in other sentence shapes,
so the own-data path is tested on text the course's notebooks never saw.

`python tests/own_corpus.py OUT_DIR --passages 400` writes OUT_DIR/corpus.txt and OUT_DIR/qa.jsonl.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SYLLABLES = ["ka", "ve", "lor", "mi", "tan", "su", "ri", "del", "ob", "an", "qui", "sel", "ta", "nor", "ebb", "ul"]
PORTS = ["Harwick", "Oster Bay", "Lindqvist", "Port Ambry", "Sallow Reach", "Tiberon", "Maelstrand", "Cobbe"]


def name(rng: random.Random, parts: int = 2) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(parts)).capitalize()


def ship(rng: random.Random) -> tuple[str, list[tuple[str, str]]]:
    vessel, captain = f"{name(rng)} {name(rng, 3)}", f"{name(rng)} {name(rng)}"
    year, port, crew = str(rng.randint(1820, 1960)), rng.choice(PORTS), str(rng.randint(12, 900))
    text = (f"Launched from the {port} yards in {year}, the vessel {vessel} sailed under captain {captain} "
            f"with a crew of {crew}. Its logbooks survive in a private archive.")
    questions = [(f"In which year was the {vessel} launched?", year),
                 (f"Who was the captain of the {vessel}?", captain),
                 (f"How many sailors made up the crew of the {vessel}?", crew)]
    return text, questions


def observatory(rng: random.Random) -> tuple[str, list[tuple[str, str]]]:
    site, director = f"{name(rng, 3)} Observatory", f"{name(rng)} {name(rng)}"
    opened, mirror = str(rng.randint(1850, 2010)), f"{rng.randint(5, 95) / 10:.1f}"
    text = (f"High above the valley stands the {site}. It opened its dome in {opened}, its first director was "
            f"{director}, and its main telescope carries a mirror of {mirror} metres.")
    questions = [(f"When did the {site} open?", opened),
                 (f"Who directed the {site} first?", director),
                 (f"What is the mirror diameter, in metres, of the {site}'s main telescope?", mirror)]
    return text, questions


def generate(n_passages: int, seed: int = 0) -> tuple[list[str], list[dict]]:
    """Passages and one question per passage (a random one of its facts), in passage order."""
    rng = random.Random(seed)
    passages, qa = [], []
    for i in range(n_passages):
        text, questions = (ship if i % 2 == 0 else observatory)(rng)
        question, answer = rng.choice(questions)
        passages.append(text)
        qa.append({"question": question, "answers": [answer]})
    return passages, qa


def write(out_dir: str | Path, n_passages: int, seed: int = 0) -> tuple[Path, Path]:
    """OUT_DIR/corpus.txt (one passage per line) and OUT_DIR/qa.jsonl (no gold ids)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    passages, qa = generate(n_passages, seed)
    (out / "corpus.txt").write_text("".join(p + "\n" for p in passages), encoding="utf-8")
    (out / "qa.jsonl").write_text("".join(json.dumps(q) + "\n" for q in qa), encoding="utf-8")
    return out / "corpus.txt", out / "qa.jsonl"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--passages", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(*write(args.out_dir, args.passages, args.seed))
