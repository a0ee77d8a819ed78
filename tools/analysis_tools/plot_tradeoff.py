"""Accuracy / efficiency trade-off of several LAUD runs, one series per
paradigm: mAP (or top-1) against the predicted backbone latency and against
the backbone FLOPs, as the paper's figure 10
(:func:`laud_mm.analysis.tradeoff.plot_tradeoff`).

Reads the evaluation records that mmengine writes into a work dir
(``<timestamp>/vis_data/scalars.json``, validation during training, and
``<timestamp>/<timestamp>.json``, the metrics of ``tools/test.py``); for each
run the most recent record holding both the accuracy metric and
``laud/latency_ms`` is used.

Usage:
    python tools/analysis_tools/plot_tradeoff.py RUN [RUN ...] [--metric coco/bbox_mAP]
        [--paradigm spatial channel ...] [--labels A B ...]
        [--out tradeoff.png] [--title TEXT] [--annotate]

RUN is a work dir, a timestamp dir, or one of the JSON files above. The
paradigm of a run ('spatial', 'channel', 'layer' or 'static') comes from
``--paradigm``, else from the config mmengine saved in the run
(``model.backbone.paradigm``), else from the path name.
"""
import argparse
import sys

from laud_mm.analysis.tradeoff import (DEFAULT_METRICS, PARADIGMS,
                                       plot_tradeoff)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Plot mAP / top-1 against predicted latency and FLOPs')
    parser.add_argument('runs', nargs='+',
                        help='work dirs, timestamp dirs or log JSON files')
    parser.add_argument('--metric', default=None,
                        help=f'accuracy key (default: first of '
                        f'{", ".join(DEFAULT_METRICS)} found)')
    parser.add_argument('--paradigm', nargs='+', default=None,
                        choices=PARADIGMS, help='one per run')
    parser.add_argument('--labels', nargs='+', default=None,
                        help='one per run (default: directory names)')
    parser.add_argument('--out', default='tradeoff.png', help='PNG to write')
    parser.add_argument('--title', default=None)
    parser.add_argument('--annotate', action='store_true',
                        help='write each run label beside its point')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    plot_tradeoff(args.runs, metric=args.metric, paradigms=args.paradigm,
                  labels=args.labels, out=args.out, title=args.title,
                  annotate=args.annotate)
    return 0


if __name__ == '__main__':
    sys.exit(main())
