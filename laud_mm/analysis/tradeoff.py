"""Accuracy / efficiency trade-off of several LAUD runs, one series per
paradigm: mAP (or top-1) against the predicted backbone latency and against
the backbone FLOPs, as the paper's figure 10.

Reads the evaluation records that mmengine writes into a work dir:
``<work_dir>/<timestamp>/vis_data/scalars.json`` (one JSON record per line,
validation during training) and ``<work_dir>/<timestamp>/<timestamp>.json``
(the metrics of ``tools/test.py``). For each run the most recent record that
holding both the accuracy metric and ``laud/latency_ms`` is plotted; a run
must hold exactly one (:func:`run_record`). A run is a work dir, a timestamp
dir, or one of the JSON files above; its paradigm
('spatial', 'channel', 'layer' or 'static') is given, else read from the
config mmengine saved in the run (``model.backbone.paradigm``), else from
the path name. Command line: ``tools/analysis_tools/plot_tradeoff.py``.

Source: paper sec. 4 / fig. 10 (accuracy against latency and FLOPs per
paradigm); the logged keys are those of :class:`laud_mm.BackboneLatencyMetric`.
"""
import glob
import json
import os
import os.path as osp
import re
from typing import Dict, List, Optional, Sequence

from mmengine.config import Config

#: series of the figure, in legend order
PARADIGMS = ('spatial', 'channel', 'layer', 'static')
#: logged keys of :class:`laud_mm.BackboneLatencyMetric`
LATENCY_KEY = 'laud/latency_ms'
FLOPS_KEY = 'laud/backbone_GFLOPs'
MEASURED_KEY = 'laud/measured_ms'
# tried in this order when --metric is not given
DEFAULT_METRICS = ('coco/bbox_mAP', 'coco/segm_mAP', 'accuracy/top1')
_TIMESTAMP_JSON = re.compile(r'^\d{8}_\d{6}\.json$')
#: (colour, marker) per paradigm
STYLE = {'spatial': ('tab:blue', 'o'), 'channel': ('tab:orange', 's'),
         'layer': ('tab:green', '^'), 'static': ('black', '*')}


def find_metric_files(path: str) -> List[str]:
    """The evaluation-log files of a run, oldest first.

    Args:
        path: a work dir, a timestamp dir or a JSON file.

    Returns:
        Paths of ``vis_data/scalars.json`` and ``<timestamp>.json`` files
        under ``path`` (or ``[path]`` for a file), sorted by modification
        time.

    Raises:
        FileNotFoundError: ``path`` does not exist or holds no such file.
    """
    if osp.isfile(path):
        return [path]
    if not osp.isdir(path):
        raise FileNotFoundError(f'run {path!r} does not exist')
    files = glob.glob(osp.join(path, '**', 'vis_data', 'scalars.json'),
                      recursive=True)
    files += [f for f in glob.glob(osp.join(path, '**', '*.json'),
                                   recursive=True)
              if _TIMESTAMP_JSON.match(osp.basename(f))]
    files = sorted(set(files), key=lambda f: (osp.getmtime(f), f))
    if not files:
        raise FileNotFoundError(
            f'run {path!r} holds no evaluation log (vis_data/scalars.json or '
            f'<timestamp>.json); train with a val_evaluator or run '
            f'tools/test.py with the work dir first')
    return files


def load_records(file: str) -> List[dict]:
    """JSON records of a log file: a JSON document (dict or list of dicts)
    or JSON lines (mmengine's scalars.json).

    Raises:
        ValueError: a line that is not JSON (names the file and line).
    """
    with open(file) as f:
        text = f.read()
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        doc = None
    if isinstance(doc, dict):
        return [doc]
    if isinstance(doc, list):
        return [d for d in doc if isinstance(d, dict)]
    records = []
    for i, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f'{file}:{i} is not a JSON record: {e}') from e
        if isinstance(rec, dict):
            records.append(rec)
    return records


def run_record(path: str, metric: Optional[str]) -> Dict[str, object]:
    """The one evaluation record of a run holding ``metric`` and
    ``laud/latency_ms``, with the config and checkpoint it evaluated.

    A run must resolve to exactly one such record (the copies mmengine
    writes of one record to ``vis_data/scalars.json`` and
    ``vis_data/<timestamp>.json`` count once): a work dir holding several
    (validation during training, several ``tools/test.py`` runs) is refused
    with the list of candidates, so that the evaluation plotted is the one
    named (pass its ``<timestamp>.json`` file), never silently the latest.

    Args:
        path: a run (see :func:`find_metric_files`).
        metric: accuracy key, or None to take the first of
            ``DEFAULT_METRICS`` present.

    Returns:
        dict with 'metric' (key), 'value' (float, as logged: COCO mAP in
        [0, 1], top-1 in %), 'latency_ms', 'gflops', 'activation_rate',
        'measured_ms' (``laud/measured_ms``, None where not logged),
        'config' (the config file name the run saved, or None),
        'checkpoint' (the ``load_from`` of the evaluation, or None) and
        'file'.

    Raises:
        FileNotFoundError: see :func:`find_metric_files`.
        KeyError: no record holds the metric together with the latency
            (names the run and the keys that were found).
        ValueError: several records do (names them).
    """
    seen, found, copies = set(), [], set()
    for file in find_metric_files(path):
        for i, rec in enumerate(load_records(file)):
            seen.update(rec)
            if LATENCY_KEY not in rec:
                continue
            # mmengine writes each record to vis_data/scalars.json and to
            # vis_data/<timestamp>.json: one evaluation, two copies
            copy = (osp.dirname(file), json.dumps(rec, sort_keys=True))
            if copy in copies:
                continue
            copies.add(copy)
            keys = [metric] if metric else \
                [k for k in DEFAULT_METRICS if k in rec]
            key = next((k for k in keys if k in rec), None)
            if key is not None:
                found.append((file, i, key, rec))
    if not found:
        want = metric or ' or '.join(DEFAULT_METRICS)
        raise KeyError(f'run {path!r}: no evaluation record with {want!r} '
                       f'and {LATENCY_KEY!r}; keys found: {sorted(seen)}')
    if len(found) > 1:
        names = [f'{f} (record {i + 1}, {k}={r[k]})' for f, i, k, r in found]
        raise ValueError(f'run {path!r} holds {len(found)} evaluation '
                         f'records; give the file of the one to plot (e.g. '
                         f'the <timestamp>.json of tools/test.py): '
                         f'{names}')
    file, _, key, rec = found[0]
    config, checkpoint = _run_config(file)
    return dict(metric=key, value=float(rec[key]),
                latency_ms=float(rec[LATENCY_KEY]),
                gflops=_opt_float(rec.get(FLOPS_KEY)),
                activation_rate=_opt_float(rec.get('laud/activation_rate')),
                measured_ms=_opt_float(rec.get(MEASURED_KEY)),
                config=config, checkpoint=checkpoint, file=file)


def _run_config(log_file: str):
    """(config file name, ``load_from``) of the run that wrote ``log_file``:
    mmengine saves the config as ``<work_dir>/<name>.py`` and
    ``<work_dir>/<timestamp>/vis_data/config.py``."""
    ts = osp.dirname(log_file)
    if osp.basename(ts) == 'vis_data':
        ts = osp.dirname(ts)
    work = osp.dirname(ts)
    names = sorted(osp.basename(f) for f in glob.glob(osp.join(work, '*.py')))
    checkpoint = None
    for c in (osp.join(ts, 'vis_data', 'config.py'),
              *(osp.join(work, n) for n in names)):
        try:
            with open(c) as f:
                m = re.search(r"^load_from\s*=\s*'([^']+)'", f.read(), re.M)
        except OSError:
            continue
        if m:
            checkpoint = m.group(1)
            break
    return (names[0] if names else None), checkpoint


def _opt_float(v) -> Optional[float]:
    return None if v is None else float(v)


def infer_paradigm(path: str) -> str:
    """Paradigm of a run: ``model.backbone.paradigm`` of the config saved in
    the run ('static' when None), else the first of 'spatial', 'channel',
    'layer', 'static' in the path.

    Raises:
        ValueError: neither source tells the paradigm (names the path).
    """
    root = path if osp.isdir(path) else osp.dirname(path)
    # mmengine saves the config as <work_dir>/<name>.py and
    # <work_dir>/<timestamp>/vis_data/config.py
    cands = sorted(glob.glob(osp.join(root, '*.py'))) + sorted(
        glob.glob(osp.join(root, '**', 'vis_data', 'config.py'),
                  recursive=True))
    for up in (root, osp.dirname(root), osp.dirname(osp.dirname(root))):
        if up and up != root:
            cands += sorted(glob.glob(osp.join(up, '*.py')))
    for c in cands:
        p = _paradigm_from_config(c)
        if p is not None:
            return p
    name = osp.abspath(path).lower()
    hits = [(name.rfind(p), p) for p in PARADIGMS if p in name]
    if hits:
        return max(hits)[1]
    raise ValueError(f'cannot tell the paradigm of run {path!r}; pass '
                     f'--paradigm (one of {PARADIGMS}) for every run')


def _paradigm_from_config(file: str) -> Optional[str]:
    """``model.backbone.paradigm`` of a saved config, read with mmengine's
    ``Config`` (a dumped config also holds the base files' variables, e.g.
    ``laud_channel_g2 = dict(paradigm='channel', ...)``, so the first
    ``paradigm=`` of the text is not the model's): 'static' for a LAUD
    backbone with ``paradigm=None``; None when the file does not parse or
    has no LAUD backbone."""
    try:
        cfg = Config.fromfile(file)
    except Exception:  # not a config (or one that needs its repository)
        return None
    model = cfg.get('model')
    backbone = model.get('backbone') if isinstance(model, dict) else None
    if not isinstance(backbone, dict) or \
            'laud' not in str(backbone.get('type', '')).lower() or \
            'paradigm' not in backbone:
        return None
    p = backbone['paradigm']
    return 'static' if p is None else str(p)


def collect(runs: Sequence[str], metric: Optional[str] = None,
            paradigms: Optional[Sequence[str]] = None,
            labels: Optional[Sequence[str]] = None) -> List[Dict[str, object]]:
    """One point per run (see :func:`run_record`) with 'paradigm' and
    'label' (default: the run's config and checkpoint) added.

    Raises:
        ValueError: ``paradigms`` / ``labels`` of the wrong length, or an
            unknown paradigm (names it); runs that report different metrics.
    """
    for name, seq in (('--paradigm', paradigms), ('--labels', labels)):
        if seq is not None and len(seq) != len(runs):
            raise ValueError(f'{name} has {len(seq)} entries for '
                             f'{len(runs)} runs')
    points = []
    for i, run in enumerate(runs):
        rec = run_record(run, metric)
        par = paradigms[i] if paradigms else infer_paradigm(run)
        if par not in PARADIGMS:
            raise ValueError(f'paradigm {par!r} of run {run!r} is not one of '
                             f'{PARADIGMS}')
        ckpt = rec['checkpoint'] and osp.join(   # its run dir / file
            osp.basename(osp.dirname(rec['checkpoint'])),
            osp.basename(rec['checkpoint']))
        default = ' / '.join(
            str(x) for x in (rec['config'], ckpt) if x) or \
            osp.basename(osp.normpath(run))
        rec.update(paradigm=par, run=run,
                   label=labels[i] if labels else default)
        points.append(rec)
    keys = {p['metric'] for p in points}
    if len(keys) > 1:
        raise ValueError(f'the runs report different metrics {sorted(keys)}; '
                         f'choose one with --metric')
    return points


def plot(points: Sequence[Dict[str, object]], out: str,
         title: Optional[str] = None, annotate: bool = False) -> str:
    """One panel per x quantity logged by every run: metric against the
    predicted latency (ms), the measured CPU latency (ms,
    ``laud/measured_ms``) and the backbone GFLOPs; one line per paradigm
    (points sorted by x); with ``annotate`` each point carries its number,
    the row of :func:`format_points` that names its config and checkpoint
    (full labels would crowd the panels). Writes a PNG.

    Returns:
        ``out``.

    Raises:
        ValueError: no points.
    """
    if not points:
        raise ValueError('no runs to plot')
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    metric = points[0]['metric']
    scale = 100.0 if metric.startswith('coco/') else 1.0
    ylabel = f'{metric} (%)' if scale == 100.0 else metric
    panels = [('latency_ms', 'predicted backbone latency (ms / image)')]
    if all(p.get('measured_ms') is not None for p in points):
        panels.append(('measured_ms',
                       'measured backbone latency, this CPU (ms / image)'))
    if all(p['gflops'] is not None for p in points):
        panels.append(('gflops', 'backbone GFLOPs (per image)'))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4),
                             squeeze=False)
    number = {id(p): i + 1 for i, p in enumerate(points)}
    for ax, (key, xlabel) in zip(axes[0], panels):
        for par in PARADIGMS:
            pts = sorted((p for p in points if p['paradigm'] == par),
                         key=lambda p: p[key])
            if not pts:
                continue
            color, marker = STYLE[par]
            xs = [p[key] for p in pts]
            ys = [p['value'] * scale for p in pts]
            ax.plot(xs, ys, marker=marker, color=color, label=par,
                    linestyle='none' if par == 'static' else '-',
                    markersize=10 if par == 'static' else 6)
            if annotate:
                for p, x, y in zip(pts, xs, ys):
                    ax.annotate(str(number[id(p)]), (x, y), fontsize=8,
                                xytext=(3, 3), textcoords='offset points')
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def format_points(points: Sequence[Dict[str, object]]) -> str:
    """Markdown table of :func:`collect` points: number (the figure's
    point labels), run label (config / checkpoint), paradigm, metric,
    activation rate, predicted latency ms, measured latency ms and GFLOPs
    ('-' where not logged)."""
    def f(v, fmt):
        return '-' if v is None else format(v, fmt)
    lines = [f'| # | run | paradigm | {points[0]["metric"]} | '
             f'activation rate | predicted ms | measured ms (CPU) | GFLOPs |',
             '|---|---|---|---|---|---|---|---|']
    for i, p in enumerate(points):
        lines.append(f'| {i + 1} | {p["label"]} | {p["paradigm"]} | '
                     f'{p["value"]:.4f} | {f(p["activation_rate"], ".3f")} | '
                     f'{p["latency_ms"]:.3f} | {f(p.get("measured_ms"), ".1f")} '
                     f'| {f(p["gflops"], ".2f")} |')
    return '\n'.join(lines)


def plot_tradeoff(runs: Sequence[str], metric: Optional[str] = None,
                  paradigms: Optional[Sequence[str]] = None,
                  labels: Optional[Sequence[str]] = None,
                  out: str = 'tradeoff.png', title: Optional[str] = None,
                  annotate: bool = False) -> List[Dict[str, object]]:
    """Collect one point per run (:func:`collect`), print the table
    (:func:`format_points`) and write the figure (:func:`plot`).

    Returns:
        the points.

    Raises:
        see :func:`collect` and :func:`plot`.
    """
    points = collect(runs, metric, paradigms, labels)
    print(format_points(points))
    print(f'wrote {plot(points, out, title, annotate)}')
    return points
