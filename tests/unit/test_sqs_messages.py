"""What the SQS backend sends is text SQS takes: characters it refuses in an attribute are escaped."""

from __future__ import annotations

import pytest

from thresher.core.queue.sqs_messages import attribute_text


@pytest.mark.parametrize(
    ("text", "sent"),
    [
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),  # a coloured traceback's ESC
        ("a\x00b\x08c\x1f", "a\\x00b\\x08c\\x1f"),  # NUL and the other control characters below #x20
        ("\ud800 \ufffe \uffff", "\\ud800 \\ufffe \\uffff"),  # a lone surrogate, and the two non-characters
        ("tab\tnew line\ncr\r", "tab\tnew line\ncr\r"),  # the three control characters SQS allows
        ("é \x7f \ud7ff \ue000 \ufffd \U0001f600", "é \x7f \ud7ff \ue000 \ufffd \U0001f600"),  # edges of its ranges
        ("\\x1b as typed", "\\x1b as typed"),  # already escaped: unchanged
    ],
)
def test_characters_sqs_refuses_are_escaped_and_the_rest_kept(text: str, sent: str) -> None:
    assert attribute_text(text) == sent
