"""Chunk highlighting in notebooks 04, 05 and 07 is valid CSS and readable in light and dark notebook themes: every
background is a colour a browser parses (matplotlib's "tab:red" is not one), and wherever a background is set, the
text colour is set with it (a dark theme's light text on a light background would vanish)."""

import re
from types import SimpleNamespace

import torch

from refrag_lib.course.playground import render_html
from refrag_lib.course.policy_plots import STYLE, highlight_html
from refrag_lib.course.sft_plots import examples_html

HEX = re.compile(r"#(?:[0-9a-fA-F]{3}){1,2}")


def styles(html: str) -> list[dict[str, str]]:
    found = []
    for style in re.findall(r"""style=["']([^"']*)["']""", html):
        rules = dict(rule.split(":", 1) for rule in style.split(";") if ":" in rule)
        found.append({key.strip(): value.strip() for key, value in rules.items()})
    return found


def check_readable(html: str) -> int:
    """The number of styled backgrounds, each checked."""
    backgrounds = [s for s in styles(html) if "background" in s]
    for style in backgrounds:
        assert HEX.fullmatch(style["background"]), f"not a CSS colour: {style['background']!r}"
        assert HEX.fullmatch(style.get("color", "")), f"background {style['background']} without a text colour"
    return len(backgrounds)


def test_policy_highlight_uses_css_colours_for_every_selector():
    tokenizer = SimpleNamespace(decode=lambda ids: " ".join(map(str, ids)))
    example = SimpleNamespace(segments=SimpleNamespace(chunks=[[1, 2], [3, 4], [5, 6]], suffix=[7]),
                              chunk_nll=torch.tensor([1.0, 2.0, 3.0]))
    masks = {name: [True, False, True] for name in STYLE}
    html = highlight_html(SimpleNamespace(decoder_tokenizer=tokenizer), example, masks)
    assert check_readable(html) == 2 * len(STYLE)
    assert "tab:" not in html


def test_sft_examples_and_playground_set_text_with_background():
    rows = [{"question": "q?", "gold": "River_1", "rag": "River_1", "refrag": "River_2", "expanded_chunks": ["c"]}]
    assert check_readable(examples_html(rows)) == 2
    passage = {"id": "p1", "score": 0.5, "chunks": [{"text": "x", "expanded": True}, {"text": "y", "expanded": False}]}
    answer = {"answer": "a", "ttft_ms": 10.0, "input_positions": 4, "passages": [passage], "expanded_chunks": ["x"],
              "n_chunks": 2}
    result = {"question": "q", "k": 16, "p": 0.25, "selector": "rl", "rag": {**answer, "passages": []},
              "refrag": answer}
    assert check_readable(render_html(result)) == 4  # the legend's two and one per chunk
