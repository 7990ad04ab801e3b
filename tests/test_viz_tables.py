"""advlib.viz.table and viz.rate: a table renders as an HTML table (ours, then the paper's, labelled), as text
and as GitHub-flavoured Markdown; a rate on fewer than 1,000 examples carries its Clopper-Pearson interval."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
import torch

from advlib import metrics, viz


class _Cells(HTMLParser):
    """The tables of an HTML fragment: for each <table>, its caption and rows of cell texts."""

    def __init__(self):
        super().__init__()
        self.tables, self._cell, self._in_caption = [], None, False

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append({"caption": "", "rows": []})
        elif tag == "tr":
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th"):
            self._cell = ""
        elif tag == "caption":
            self._in_caption = True

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1]["rows"][-1].append(self._cell)
            self._cell = None
        elif tag == "caption":
            self._in_caption = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        elif self._in_caption:
            self.tables[-1]["caption"] += data


def parse(html: str):
    parser = _Cells()
    parser.feed(html)
    return parser.tables


def example():
    paper = viz.paper_table([["FC10", "7.4%"]], ["model", "test error"], source="Szegedy et al. 2013, Table 1",
                            notes=["MNIST"])
    return viz.table([["FC10", "12.3%"], ["A<B & C|D", 0.5]], ["model", "test error"], caption="Ours (Fashion-MNIST)",
                     notes=["on 2,000 test images"], paper=paper)


def test_html_holds_ours_then_the_papers_labelled():
    tables = parse(example()._repr_html_())
    assert len(tables) == 2
    ours, theirs = tables
    assert ours["caption"] == "Ours (Fashion-MNIST)"
    assert ours["rows"] == [["model", "test error"], ["FC10", "12.3%"], ["A<B & C|D", "0.5"]]  # escaped, then read back
    assert theirs["caption"].startswith("The paper's: Szegedy et al. 2013, Table 1")
    assert theirs["rows"] == [["model", "test error"], ["FC10", "7.4%"]]
    assert "<li>MNIST</li>" in example()._repr_html_() and "<li>on 2,000 test images</li>" in example()._repr_html_()


def test_html_escapes_cells():
    html = viz.table([["<script>x</script>"]], ["a"])._repr_html_()
    assert "<script>x" not in html and "&lt;script&gt;" in html


def test_markdown_is_a_gfm_table_with_pipes_escaped():
    md = example().to_markdown()
    assert "| model | test error |\n| --- | --- |\n| FC10 | 12.3% |\n| A<B & C\\|D | 0.5 |" in md
    assert "**The paper's: Szegedy et al. 2013, Table 1**" in md
    assert example()._repr_markdown_() == md


def test_text_is_aligned():
    text = str(viz.table([["a", "1"], ["bbb", "22"]], ["m", "v"]))
    assert text.splitlines() == ["m     v", "---  --", "a     1", "bbb  22"]


def test_tensor_and_none_cells():
    t = viz.table([[torch.tensor(3), None]], ["a", "b"])
    assert t.rows == [["3", ""]]


@pytest.mark.parametrize("rows, columns, match", [
    ([["a", "b"]], ["x"], "row 0 has 2 cells for 1 columns"),
    ([], [], "at least one column"),
])
def test_bad_shapes_are_refused(rows, columns, match):
    with pytest.raises(ValueError, match=match):
        viz.table(rows, columns)


def test_paper_needs_a_source_and_must_be_a_papers_table():
    with pytest.raises(ValueError, match="needs its source"):
        viz.paper_table([["a"]], ["x"], source=" ")
    with pytest.raises(TypeError, match="paper= takes the paper's table"):
        viz.table([["a"]], ["x"], paper=viz.table([["b"]], ["x"]))


def test_rate_has_an_interval_below_1000_examples():
    low, high = metrics.confidence_interval(31, 50)
    assert viz.rate(31, 50) == f"62.0% [{100 * low:.1f}, {100 * high:.1f}]"
    assert viz.rate(620, 1000) == "62.0%"
    mask = torch.tensor([True, False, True, True])
    low, high = metrics.confidence_interval(3, 4)
    assert viz.rate(mask) == f"75.0% [{100 * low:.1f}, {100 * high:.1f}]"
    assert viz.rate(torch.tensor([1, 0, 1, 1])) == viz.rate(mask)
    assert viz.rate(0, 10).startswith("0.0% [0.0, ")
    assert viz.rate(10, 10).endswith(", 100.0]")


def test_rate_refuses_bad_input():
    with pytest.raises(TypeError, match="give the number of trials"):
        viz.rate(3)
    with pytest.raises(TypeError, match="tensor of per-example outcomes alone"):
        viz.rate(torch.ones(3), 3)
    with pytest.raises(ValueError, match="1-D tensor"):
        viz.rate(torch.ones(2, 2))
    with pytest.raises(ValueError, match="successes must lie in"):
        viz.rate(5, 4)
