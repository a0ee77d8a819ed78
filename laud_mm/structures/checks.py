"""Checks of user-given settings (config keys, constructor and tool
arguments): each refuses a bad value with a ValueError that names the
owner, the key and the value, instead of coercing, clipping or ignoring it.
"""
import math


def check_bool(owner: str, key: str, value) -> bool:
    """``value`` if it is True or False.

    Raises:
        ValueError: any other value (a string such as ``'no'`` would be
            truthy), naming ``owner``, ``key`` and the value.
    """
    if value is not True and value is not False:
        raise ValueError(f'{owner}: {key}={value!r} must be True or False')
    return value


def check_int(owner: str, key: str, value, minimum: int = 1) -> int:
    """``value`` if it is an integer (not a bool) >= ``minimum``.

    Raises:
        ValueError: naming ``owner``, ``key`` and the value.
    """
    if isinstance(value, bool) or not isinstance(value, int) or \
            value < minimum:
        raise ValueError(f'{owner}: {key}={value!r} must be an integer >= '
                         f'{minimum}')
    return value


def check_number(owner: str, key: str, value, allow_zero: bool = False
                 ) -> float:
    """``float(value)`` if it is a finite real number > 0 (>= 0 with
    ``allow_zero``); bools, strings, NaN and infinity are refused.

    Raises:
        ValueError: naming ``owner``, ``key`` and the value.
    """
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) \
        and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise ValueError(f'{owner}: {key}={value!r} must be a finite number '
                         f'{">=" if allow_zero else ">"} 0')
    return float(value)


def check_stage_options(owner: str, out_indices, frozen_stages,
                        num_stages: int) -> tuple:
    """A backbone's ``out_indices`` (a sequence of stage indices in
    [0, num_stages), at least one) and ``frozen_stages`` (an integer in
    [-1, num_stages], -1: none), the options mmdet / mmpretrain backbones
    assert without a message.

    Returns:
        ``tuple(out_indices)``.

    Raises:
        ValueError: naming ``owner``, the key and the value.
    """
    if not isinstance(out_indices, (tuple, list)) or not out_indices or any(
            isinstance(i, bool) or not isinstance(i, int) or
            not 0 <= i < num_stages for i in out_indices):
        raise ValueError(f'{owner}: out_indices={out_indices!r} must hold '
                         f'stage indices in [0, {num_stages})')
    if isinstance(frozen_stages, bool) or \
            not isinstance(frozen_stages, int) or \
            not -1 <= frozen_stages <= num_stages:
        raise ValueError(f'{owner}: frozen_stages={frozen_stages!r} must be '
                         f'an integer in [-1, {num_stages}]')
    return tuple(out_indices)
