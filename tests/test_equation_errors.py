"""Equations errors read as what they are: an undeclared name or a missing next value is an
``UndefinedNameError`` (an ``EquationError``), and the command line adds its long note about the
x/h convention for files without header lines only to those, never to a typo in the syntax, an
unknown function or a shape mismatch."""

from __future__ import annotations

import pytest

from graphrnn.equations import cell_from_equations
from graphrnn.errors import EquationError, UndefinedNameError
from graphrnn.tools.cli_tools import CellSpecError, resolve_cell

TAIL = "header line"


@pytest.mark.parametrize("body", [
    "h_next = tanh(W_x @ x + W_h @ h +)",            # a syntax typo
    "h_next = tanhh(W_x @ x + W_h @ h)",             # an unknown function
    "h_next = tanh(W_x @ x + W_h @ h) + foo.bar",    # attribute access
    "h_next = tanh(W_x @ x + W_h @ h)\nh_next = h",  # reassignment
    "h_next = tanh(W_x @ x + W_h @ h) * [x, x]",     # sizes that cannot agree
])
def test_a_typo_gets_no_header_tail(tmp_path, body: str) -> None:
    f = tmp_path / "typo.eq"
    f.write_text(body + "\n")
    with pytest.raises(CellSpecError) as ei:
        resolve_cell(str(f), 3, 4)
    msg = str(ei.value)
    assert f"{f}:" in msg and TAIL not in msg, msg
    assert "\n" not in msg


@pytest.mark.parametrize("body", [
    "h_next = tanh(W_x @ inp + W_h @ h)",        # the input is not called x
    "s_next = tanh(W_x @ x + W_h @ s)",          # the state is not called h
])
def test_a_name_the_convention_cannot_explain_gets_the_tail(tmp_path, body: str) -> None:
    f = tmp_path / "renamed.eq"
    f.write_text(body + "\n")
    with pytest.raises(CellSpecError) as ei:
        resolve_cell(str(f), 3, 4)
    assert "it needs 'input NAME: SIZE' / 'state NAME: SIZE' header lines" in str(ei.value)


@pytest.mark.parametrize("text, match", [
    ("input x: 3\nstate h: 4\nh_next = tanh(W @ xx)\n", "undefined name 'xx' on the right of @"),
    ("input x: 3\nstate h: 4\nhn = tanh(W @ h + U @ x)\n", "no next value for state 'h'"),
    ("input x: 3\nstate h: 4\nh_next = tanh(W @ h + U @ x)\noutput y\n",
     "undefined name 'y' given as the output"),
    ("input x: 3\nstate h: 4\nh_next = tanh(W @ h + U @ x) + h_nxt\n",
     "undefined name 'h_nxt'; did you mean 'h_next'"),
    ("input x: 3\nc_next = tanh(W @ x) + c\n", "'c' is not an input or a state"),
])
def test_undeclared_names_are_undefined_name_errors(text: str, match: str) -> None:
    with pytest.raises(UndefinedNameError, match=match) as ei:
        cell_from_equations(text)
    assert isinstance(ei.value, EquationError) and isinstance(ei.value, SyntaxError)


def test_other_errors_are_not_undefined_name_errors() -> None:
    with pytest.raises(EquationError) as ei:
        cell_from_equations("state h: 4\nh_next = tanhh(W @ h)\n")
    assert not isinstance(ei.value, UndefinedNameError)
