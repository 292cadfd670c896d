"""DRF's JSON parser, with nesting too deep for Python's decoder answered as the parse error it is."""

from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict | None = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            # DRF catches only ValueError: `[[[[...` 100,000 deep would otherwise be a 500.
            raise ParseError("JSON parse error - nested too deeply") from None
