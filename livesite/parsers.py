"""DRF's JSON parser, with nesting too deep for Python's decoder answered as the parse error it is."""

from collections.abc import Mapping
from typing import IO, Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    # Any out: a JSON body is any JSON value (DRF's stubs say dict), for the view to check.
    def parse(
        self, stream: IO[bytes], media_type: str | None = None, parser_context: Mapping[str, object] | None = None
    ) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            # DRF catches only ValueError: `[[[[...` 100,000 deep would otherwise be a 500.
            raise ParseError("JSON parse error - nested too deeply") from None
