"""OmegaConf value nodes that check ranges and choices as a config is composed, and the
dataclass fields made of them (:func:`number`, :func:`whole`, :func:`choice`), for the
schemas of :mod:`synthsat.schemas`. Values stay plain (floats, ints, strings: no enums
reach models, checkpoints or ``metrics.json``); no torch is imported."""

from __future__ import annotations

import math
from dataclasses import field
from typing import Any

from omegaconf import MISSING, FloatNode, IntegerNode, StringNode
from omegaconf.errors import ValidationError


# -- value nodes that check ranges and choices ---------------------------------------------
class NumberNode(FloatNode):
    """A float node whose values must lie in an interval (ends inclusive unless open)."""

    def __init__(
        self,
        value: Any = MISSING,
        low: float = -math.inf,
        high: float = math.inf,
        open_low: bool = False,
        is_optional: bool = False,
        **kwargs: Any,
    ) -> None:
        self.__dict__["_bounds"] = (low, high, open_low)
        super().__init__(value, is_optional=is_optional, **kwargs)

    def rule(self) -> str:
        """The accepted values, in words."""
        low, high, open_low = self.__dict__["_bounds"]
        if high == math.inf:
            return f"a number {'>' if open_low else '>='} {low:g}"
        return f"a number in {'(' if open_low else '['}{low:g}, {high:g}]"

    def _validate_and_convert_impl(self, value: Any) -> float:
        if isinstance(value, bool):
            raise ValidationError(f"Value '$VALUE' is not {self.rule()}")
        number = super()._validate_and_convert_impl(value)
        low, high, open_low = self.__dict__["_bounds"]
        above = number > low if open_low else number >= low
        if not (above and number <= high):
            raise ValidationError(f"Value '$VALUE' is not {self.rule()}")
        return number

    def __deepcopy__(self, memo: dict[int, Any]) -> NumberNode:
        res = NumberNode()
        res.__dict__["_bounds"] = self.__dict__["_bounds"]
        self._deepcopy_impl(res, memo)
        return res


class WholeNode(IntegerNode):
    """An int node whose values must be at least ``minimum`` (or, with ``unlimited``, -1:
    Lightning's "no limit" of a step or epoch budget)."""

    def __init__(
        self,
        value: Any = MISSING,
        minimum: int = 0,
        is_optional: bool = False,
        unlimited: bool = False,
        **kwargs: Any,
    ) -> None:
        self.__dict__["_minimum"] = minimum
        self.__dict__["_unlimited"] = unlimited
        super().__init__(value, is_optional=is_optional, **kwargs)

    def _validate_and_convert_impl(self, value: Any) -> int:
        minimum, unlimited = self.__dict__["_minimum"], self.__dict__["_unlimited"]
        try:
            number = None if isinstance(value, bool) else super()._validate_and_convert_impl(value)
        except ValidationError:
            number = None
        if number is None or (number < minimum and not (unlimited and number == -1)):
            rule = f"a whole number >= {minimum}" + (" (or -1: no limit)" if unlimited else "")
            raise ValidationError(f"Value '$VALUE' is not {rule}")
        return number

    def __deepcopy__(self, memo: dict[int, Any]) -> WholeNode:
        res = WholeNode(minimum=self.__dict__["_minimum"], unlimited=self.__dict__["_unlimited"])
        self._deepcopy_impl(res, memo)
        return res


class ChoiceNode(StringNode):
    """A string node whose values must be one of ``choices``."""

    def __init__(
        self,
        value: Any = MISSING,
        choices: tuple[str, ...] = (),
        is_optional: bool = False,
        **kwargs: Any,
    ) -> None:
        self.__dict__["_choices"] = tuple(choices)
        super().__init__(value, is_optional=is_optional, **kwargs)

    def _validate_and_convert_impl(self, value: Any) -> str:
        choices = self.__dict__["_choices"]
        if not isinstance(value, str) or value not in choices:
            raise ValidationError(f"Value '$VALUE' is not one of: {', '.join(choices)}")
        return value

    def __deepcopy__(self, memo: dict[int, Any]) -> ChoiceNode:
        res = ChoiceNode(choices=self.__dict__["_choices"])
        self._deepcopy_impl(res, memo)
        return res


def number(
    low: float = -math.inf,
    high: float = math.inf,
    *,
    open_low: bool = False,
    optional: bool = False,
) -> Any:
    """A dataclass field: a float in ``[low, high]`` (``(low, high]`` with ``open_low``)."""
    return field(
        default_factory=lambda: NumberNode(
            low=low, high=high, open_low=open_low, is_optional=optional
        )
    )


def whole(minimum: int = 0, *, optional: bool = False, unlimited: bool = False) -> Any:
    """A dataclass field: an int >= ``minimum`` (``optional``: or null; ``unlimited``: or -1)."""
    return field(
        default_factory=lambda: WholeNode(
            minimum=minimum, is_optional=optional, unlimited=unlimited
        )
    )


def choice(*choices: str) -> Any:
    """A dataclass field: one of ``choices``."""
    return field(default_factory=lambda: ChoiceNode(choices=choices))
