"""Latency-guided granularity search (paper sec. 3.3 and 4.2: choose S and G
per stage by predicted latency, not by FLOPs).

Block latencies add up, so every stage is searched on its own: for each
candidate granularity the stage's blocks are predicted at a uniform mask
density equal to the target rate, and the candidates are ranked by latency.
Layer skipping (one "patch" per map) is ranked beside them as a reference.

Source: paper sec. 4.2 (Figs. 6-7: latency vs S and G per stage),
docs/method.md sec. 1 and 4.
"""
import dataclasses
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from ..structures.geometry import BlockGeometry
from .predictor import LatencyPredictor

__all__ = ['StageCandidate', 'search_granularity', 'format_search',
           'DEFAULT_S', 'DEFAULT_G']

#: candidate patch sides S (spatial) and group sizes G (channel)
DEFAULT_S = (1, 2, 4, 7, 8, 14)
DEFAULT_G = (1, 2, 4, 8)


@dataclass
class StageCandidate:
    """One ranked candidate of one stage.

    Attributes:
        stage: stage index (0-based).
        paradigm: 'spatial', 'channel' or 'layer'.
        granularity: S or G (None for layer).
        ms: predicted latency of the stage's blocks, whole batch, ms.
        static_ms: the same blocks static, ms.
    """
    stage: int
    paradigm: str
    granularity: Optional[int]
    ms: float
    static_ms: float

    @property
    def speedup(self) -> float:
        """static_ms / ms."""
        return self.static_ms / self.ms if self.ms > 0 else float('inf')


def _with(g: BlockGeometry, paradigm, granularity) -> BlockGeometry:
    return dataclasses.replace(g, paradigm=paradigm, granularity=granularity)


def search_granularity(predictor: LatencyPredictor,
                       geometries: Sequence[BlockGeometry], target: float,
                       batch_size: int, paradigms: Sequence[str] = (
                           'spatial', 'channel', 'layer'),
                       s_candidates: Sequence[int] = DEFAULT_S,
                       g_candidates: Sequence[int] = DEFAULT_G,
                       ) -> Dict[int, List[StageCandidate]]:
    """Rank granularities per stage by predicted latency.

    Args:
        predictor: the :class:`LatencyPredictor` (its device).
        geometries: block geometries of the backbone (any paradigm; only
            the shapes are used).
        target: mask density / activation rate in (0, 1] applied to every
            block.
        batch_size: images per batch.
        paradigms: which paradigms to rank.
        s_candidates: patch sides S tried (those larger than a stage's
            output map are skipped: they equal layer skipping).
        g_candidates: group sizes G tried (must divide the stage width).

    Returns:
        ``{stage: [StageCandidate, ...]}`` sorted by latency (fastest
        first).

    Raises:
        ValueError: naming ``target`` if outside (0, 1], ``paradigms`` if
            it holds an unknown name.
    """
    if not 0. < float(target) <= 1.:
        raise ValueError(f'target={target!r} must be in (0, 1]')
    for p in paradigms:
        if p not in ('spatial', 'channel', 'layer'):
            raise ValueError(f"paradigms contains {p!r}; use 'spatial', "
                             f"'channel' or 'layer'")
    stages: Dict[int, List[BlockGeometry]] = {}
    for g in geometries:
        stages.setdefault(g.stage, []).append(g)
    out: Dict[int, List[StageCandidate]] = {}
    for s, blocks in sorted(stages.items()):
        static = predictor.predict_static(blocks, batch_size).total_ms
        cands = []
        configs: List[Tuple[str, Optional[int]]] = []
        if 'spatial' in paradigms:
            side = max(blocks[-1].out_hw)
            configs += [('spatial', S) for S in s_candidates if S <= side]
        if 'channel' in paradigms:
            configs += [('channel', G) for G in g_candidates
                        if all(b.width % G == 0 for b in blocks)]
        if 'layer' in paradigms:
            configs.append(('layer', None))
        for par, gran in configs:
            gs = [_with(b, par, gran) for b in blocks]
            ms = predictor.predict_backbone(gs, [target] * len(gs),
                                            batch_size).total_ms
            cands.append(StageCandidate(s, par, gran, ms, static))
        out[s] = sorted(cands, key=lambda c: c.ms)
    return out


def format_search(result: Dict[int, List[StageCandidate]], top: int = 0
                  ) -> str:
    """Plain-text table of a search, and the recommended S and G per stage.

    Args:
        result: output of :func:`search_granularity`.
        top: rows per stage (0 = all).
    """
    lines = [f'{"stage":<6}{"rank":<5}{"paradigm":<9}{"S/G":<5}'
             f'{"ms":>10}{"static ms":>11}{"speedup":>9}']
    best = {'spatial': [], 'channel': []}
    for s, cands in sorted(result.items()):
        for r, c in enumerate(cands[:top or None]):
            lines.append(f'{s:<6}{r + 1:<5}{c.paradigm:<9}'
                         f'{"-" if c.granularity is None else c.granularity!s:<5}'
                         f'{c.ms:>10.3f}{c.static_ms:>11.3f}{c.speedup:>9.3f}')
        for p in best:
            ps = [c for c in cands if c.paradigm == p]
            if ps:
                best[p].append(str(ps[0].granularity))
    for p, v in best.items():
        if v:
            lines.append(f'recommended {p} granularity per stage: '
                         f'{"-".join(v)}')
    return '\n'.join(lines)
