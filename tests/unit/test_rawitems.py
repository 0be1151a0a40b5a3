"""The items of a submission as written (services/gateway/rawitems.py): found wherever the body puts them."""

from __future__ import annotations

import json

import pytest

from services.gateway.rawitems import raw_items


@pytest.mark.parametrize(
    ("body", "items"),
    [
        ('{"item_list": {"items": []}}', []),
        (' \n{ "item_list" : { "items" : [ 1 , 2.50 ] } } ', ["1", "2.50"]),
        ('{"a": {"item_list": 1}, "item_list": {"x": [1, {"items": [9]}], "items": [[1, [2, "a ]"]], {"b": {}}]}}',
         ['[1,[2,"a ]"]]', '{"b":{}}']),
        ('{"item_list": {"items": [1]}, "item_list": {"items": [2]}}', ["2"]),  # the last key wins, as decoders do
        ('{"item_list": {"items": [1], "items": "no list"}}', None),
        ('{"item_list": {"items": [1]}, "item_list": null}', None),
        ('{"items": [1]}', None),
        ("[1]", None),
        ('"item_list"', None),
    ],
)  # fmt: skip
def test_items_are_found_as_written_wherever_the_body_puts_them(body: str, items: list[str] | None) -> None:
    json.loads(body)  # every body here is valid JSON, as the gateway makes sure first
    assert raw_items(body) == items


def test_whitespace_goes_only_between_tokens_never_inside_strings() -> None:
    body = '{"item_list": {"items": [{"k" :\t"a  b\\" , c",\r\n "n": [ 1e2 , -0.0 ]}, "  x  "]}}'
    assert raw_items(body) == ['{"k":"a  b\\" , c","n":[1e2,-0.0]}', '"  x  "']
