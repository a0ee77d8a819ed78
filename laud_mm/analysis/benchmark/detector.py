"""What a detection practitioner feels: the cost of a LAUD training
iteration against the static backbone's, and whole-detector inference of a
LAUD detector with dynamic inference against the static detector, both on
real COCO images, measured side by side in one process.

- Training: Faster R-CNN (FPN) with a LAUD-R50 backbone (masked-dense
  training: dense compute times the masks, plus the maskers and the sparsity
  loss) against the same detector with a static ResNet-50 (``paradigm=None``,
  no sparsity loss): forward, backward and SGD step on the same batch
  (real coco_tiny train images with their boxes), alternately, medians;
  the LAUD detector starts from the static one's weights (its maskers
  from their init).
- Inference: the LAUD detector with ``dynamic_inference=True`` and its gates
  forced to random patterns at the activation rate r (the benchmarks'
  FLOPs-based per-block rate, :func:`~laud_mm.analysis.forced_gates.
  force_random_gates`) against the same detector whose backbone runs its
  static network (dense, no maskers, BN folded: ``static_blocks``), the
  whole ``predict`` (backbone, FPN, RPN, RoI head, NMS), batch 1 at the
  paper's 800 x 1333 scale; the backbone alone timed beside it.
- Both: RoIAlign samples a fixed 2 x 2 points per bin
  (:data:`ROI_SAMPLING_RATIO`; mmdet's adaptive default makes the RoI
  head's cost follow the random proposals' sizes).

Wall clock with all the threads given is the headline; process CPU time
beside it (docs/benchmarks.md).

Source: paper sec. 4.5 (LAUD backbones in Faster R-CNN, backbone latency),
appendix B.3 (training recipe).
"""
import copy
from typing import Dict, List, Sequence, Tuple

import torch

from ..forced_gates import force_random_gates
from ..timing import bench_best_static, bench_pair, machine_line
from .common import PARADIGMS

#: the Faster R-CNN config each paradigm's row builds (random weights, no
#: download; the RoI head's sampling fixed, :data:`ROI_SAMPLING_RATIO`)
CONFIGS = {
    'spatial': 'configs/faster_rcnn/'
               'faster-rcnn_laud-r50-spatial-s4421_t0.5_fpn_1x_coco.py',
    'channel': 'configs/faster_rcnn/'
               'faster-rcnn_laud-r50-channel-g2_t0.5_fpn_1x_coco.py',
    'layer': 'configs/faster_rcnn/faster-rcnn_laud-r50-layer_t0.5_fpn_1x_coco.py',
}
TINY = 'configs/_base_/datasets/coco_tiny.py'
#: RoIAlign sampling points per bin side in the benchmarked detectors
#: (mmdet's configs: 0, adaptive), see :func:`_detector`
ROI_SAMPLING_RATIO = 2


def _detector(paradigm, root: str = '.'):
    """Faster R-CNN R50-FPN with a LAUD backbone of ``paradigm`` (None: the
    static ResNet-50 and no sparsity loss), random weights."""
    import os.path as osp

    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    register_all_modules(init_default_scope=True)
    cfg = Config.fromfile(osp.join(root, CONFIGS[paradigm or 'layer']))
    m = copy.deepcopy(cfg.model)
    m.backbone.init_cfg = None
    # RoIAlign with sampling_ratio=0 samples ceil(roi side / 7) points per
    # bin: its cost follows the proposals' sizes, which random weights (and
    # static against dynamic features) make differ between the two sides
    # of a comparison. A fixed ratio gives both the same RoI-head work.
    m.roi_head.bbox_roi_extractor.roi_layer.sampling_ratio = \
        ROI_SAMPLING_RATIO
    if paradigm is None:
        m.backbone.paradigm, m.backbone.granularity = None, None
        m.sparsity_loss = None
    torch.manual_seed(0)
    det = MODELS.build(m)
    return det


def paired_detectors(paradigm: str, root: str = '.') -> Dict:
    """The training comparison's two Faster R-CNNs: ``'static'`` (static
    ResNet-50, no sparsity loss) and ``'laud'`` (LAUD-R50 of
    ``paradigm``) holding the static one's weights, its maskers at their
    init, so that both start from the same proposals and RoI-head work.

    Raises:
        RuntimeError: a static weight the LAUD detector has no place for.
    """
    dets = {'laud': _detector(paradigm, root), 'static': _detector(None, root)}
    weights = {k: v for k, v in dets['static'].state_dict().items()
               if not k.endswith('laud_paradigm')}  # each keeps its tag
    unexpected = dets['laud'].load_state_dict(
        weights, strict=False).unexpected_keys
    if unexpected:
        raise RuntimeError(f'static weights the LAUD detector lacks: '
                           f'{unexpected[:5]}')
    return dets


def _coco_batch(det, split: str, n: int, scale: Tuple[int, int],
                root: str = '.'):
    """``n`` real coco_tiny images of ``split`` through mmdet's pipeline at
    ``scale`` (keep ratio), as the detector's data preprocessor returns
    them (inputs, data samples with boxes)."""
    import os.path as osp

    from mmdet.registry import DATASETS
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    tiny = Config.fromfile(osp.join(root, TINY))
    key = 'tiny_train_dataloader' if split == 'train' else \
        'tiny_val_dataloader'
    ds_cfg = copy.deepcopy(tiny[key].dataset)
    ds_cfg.data_root = osp.join(root, ds_cfg.data_root)
    if not osp.isabs(tiny.tiny_data_root):
        ds_cfg.data_root = osp.normpath(ds_cfg.data_root)
    for t in ds_cfg.pipeline:
        if t['type'] == 'Resize':
            t['scale'] = tuple(scale)
        if t['type'] == 'RandomFlip':
            t['prob'] = 0.
    dataset = DATASETS.build(ds_cfg)
    data = pseudo_collate([dataset[i] for i in range(n)])
    return det.data_preprocessor(data, split == 'train')


def time_training(paradigm: str, batch: int, scale: Tuple[int, int],
                  warmup: int, repeats: int, root: str = '.') -> Dict:
    """A training iteration (forward, losses, backward, SGD step) of the
    LAUD detector against the static one, alternately on the same batch.

    Returns:
        dict(laud_ms, static_ms, ratio (laud / static, wall), cpu_ratio).
    """
    dets = paired_detectors(paradigm, root)
    data = _coco_batch(dets['laud'], 'train', batch, scale, root)
    opts = {k: torch.optim.SGD(d.parameters(), lr=1e-4, momentum=0.9)
            for k, d in dets.items()}

    def step(key):
        def fn(_):
            det = dets[key]
            det.train()
            with torch.enable_grad():
                losses = det.loss(data['inputs'], data['data_samples'])
                loss, _ = det.parse_losses(losses)
                opts[key].zero_grad()
                loss.backward()
                opts[key].step()
        return fn

    tm = bench_pair(step('static'), step('laud'), None, warmup, repeats)
    return dict(laud_ms=tm.dynamic_ms, static_ms=tm.static_ms,
                ratio=1 / tm.speedup, cpu_ratio=1 / tm.cpu_speedup)


def time_inference(paradigm: str, rate: float, scale: Tuple[int, int],
                   warmup: int, repeats: int, root: str = '.') -> Dict:
    """Whole-detector ``predict`` (batch 1) with dynamic inference at
    activation rate ``rate`` against the static detector, and the backbone
    alone.

    The whole detectors both run NCHW: on channels_last input mmcv's CPU
    RoIAlign reads the FPN maps wrongly, so a static detector fed
    channels_last would time a pipeline that returns wrong boxes, and the
    LAUD backbone's forward runs in its input's format (NCHW here, its
    features NCHW for the RoI head). The backbone alone is timed as the
    backbone benchmarks time it: the static one in the faster of NCHW and
    channels_last (:func:`~laud_mm.analysis.timing.bench_best_static`),
    the dynamic one fed its ``dynamic_memory_format`` (the conversion
    timed).

    Returns:
        dict(rate_real, static_ms, dynamic_ms, speedup (wall), cpu_speedup,
        static_layout ('NCHW'), backbone_static_ms, backbone_dynamic_ms,
        backbone_speedup, backbone_static_layout, input_hw).
    """
    det = _detector(paradigm, root).eval()
    bb = det.backbone
    bb.dynamic_inference = True
    data = _coco_batch(det, 'val', 1, scale, root)
    x, samples = data['inputs'], data['data_samples']
    hw = tuple(x.shape[-2:])
    real = force_random_gates(bb, rate, 1, hw, seed=1)

    def predict(t):
        det.predict(t, samples)

    def predict_static(t):
        with bb.static_blocks():
            det.predict(t, samples)

    def backbone(t):
        return bb(t.contiguous(memory_format=bb.dynamic_memory_format(t)))

    tm = bench_best_static(predict_static, predict, x, warmup, repeats,
                           layouts=('NCHW',))
    bb_tm = bench_best_static(bb.static_forward, backbone, x, warmup,
                              repeats)
    return dict(rate_real=real, static_ms=tm.static_ms,
                dynamic_ms=tm.dynamic_ms, speedup=tm.speedup,
                cpu_speedup=tm.cpu_speedup, static_layout=tm.static_layout,
                backbone_static_ms=bb_tm.static_ms,
                backbone_dynamic_ms=bb_tm.dynamic_ms,
                backbone_speedup=bb_tm.speedup,
                backbone_static_layout=bb_tm.static_layout,
                input_hw=hw)


def benchmark_detector(paradigms: Sequence[str] = tuple(PARADIGMS),
                       rate: float = 0.5,
                       scale: Tuple[int, int] = (1333, 800),
                       train_scale: Tuple[int, int] = (1333, 800),
                       train_batch: int = 2, threads: int = 2,
                       warmup: int = 1, repeats: int = 3,
                       parts: Sequence[str] = ('train', 'infer'),
                       root: str = '.') -> List[Dict]:
    """Print and return the training and inference tables (see the module
    docstring).

    Args:
        paradigms: LAUD paradigms of the rows.
        rate: activation rate of the inference rows.
        scale, train_scale: mmdet ``Resize`` scales (long, short side).
        train_batch: images per training iteration.
        threads: torch threads.
        warmup, repeats: untimed and timed alternating pairs.
        parts: 'train' and / or 'infer'.
        root: the repository root (configs and ../shared/data).

    Returns:
        one dict per row (``part`` 'train' or 'infer').

    Raises:
        ValueError: naming an option out of range.
    """
    bad = [p for p in paradigms if p not in PARADIGMS]
    if bad:
        raise ValueError(f'--paradigms={list(paradigms)}: unknown {bad}')
    if not 0 <= rate <= 1:
        raise ValueError(f'--rate={rate} must lie in [0, 1]')
    for name, v in (('threads', threads), ('repeats', repeats),
                    ('train-batch', train_batch)):
        if v < 1:
            raise ValueError(f'--{name}={v} must be >= 1')
    if warmup < 0:
        raise ValueError(f'--warmup={warmup} must be >= 0')
    for name, sc in (('scale', scale), ('train-scale', train_scale)):
        if len(sc) != 2 or any(v < 1 for v in sc):
            raise ValueError(f'--{name}={tuple(sc)} must be two positive '
                             f'sides (long, short)')
    torch.set_num_threads(threads)
    print(machine_line(backend=True, load=True))
    rows = []
    if 'train' in parts:
        print(f'\nTraining iteration, Faster R-CNN R50-FPN, batch '
              f'{train_batch}, scale {train_scale} (LAUD masked-dense + '
              f'sparsity loss vs static):')
        print('| paradigm | static ms | LAUD ms | LAUD / static (wall) | '
              'LAUD / static (CPU time) |')
        print('|---|---|---|---|---|')
        for p in paradigms:
            r = time_training(p, train_batch, train_scale, warmup, repeats,
                              root)
            r.update(part='train', paradigm=p)
            rows.append(r)
            print(f"| {p} | {r['static_ms']:.0f} | {r['laud_ms']:.0f} | "
                  f"{r['ratio']:.3f}x | {r['cpu_ratio']:.3f}x |", flush=True)
    if 'infer' in parts:
        print(f'\nInference, whole Faster R-CNN R50-FPN, batch 1, scale '
              f'{scale}, dynamic inference at r = {rate} vs static:')
        print('| paradigm | input | realised r | static ms (layout) | '
              'dynamic ms | speedup (wall) | speedup (CPU time) | '
              'backbone static ms (layout) | backbone dynamic ms | '
              'backbone speedup |')
        print('|---|---|---|---|---|---|---|---|---|---|')
        for p in paradigms:
            r = time_inference(p, rate, scale, warmup, repeats, root)
            r.update(part='infer', paradigm=p)
            rows.append(r)
            print(f"| {p} | {r['input_hw'][0]}x{r['input_hw'][1]} | "
                  f"{r['rate_real']:.3f} | {r['static_ms']:.0f} "
                  f"({r['static_layout']}) | "
                  f"{r['dynamic_ms']:.0f} | {r['speedup']:.2f}x | "
                  f"{r['cpu_speedup']:.2f}x | {r['backbone_static_ms']:.0f} "
                  f"({r['backbone_static_layout']}) | "
                  f"{r['backbone_dynamic_ms']:.0f} | "
                  f"{r['backbone_speedup']:.2f}x |", flush=True)
    return rows
