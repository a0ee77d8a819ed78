"""BackboneLatencyMetric prices each image at its own input size: the same
images evaluated one by one (no padding) or two per batch (padded to the
larger one) give the same per-image statistics and the same laud/ figures,
and the figures say which hardware, batch and input size they assume
(laud_mm/models/layers/stats.py, laud_mm/evaluation/metrics/
backbone_latency.py; paper sec. 4.5)."""
import pytest
import torch
from mmdet.structures import DetDataSample

from conftest import load_coco_images
from laud_mm import BackboneLatencyMetric, LAUDResNet
from laud_mm.models.layers.stats import attach_laud_stats

SIZES = [(96, 128), (128, 80)]


def _images():
    """Two real COCO images at different sizes (H, W)."""
    return [load_coco_images(n=2, size=hw)[i:i + 1]
            for i, hw in enumerate(SIZES)]


def _samples(imgs, batch_hw=None):
    out = []
    for x in imgs:
        ds = DetDataSample()
        ds.set_metainfo(dict(img_shape=tuple(x.shape[-2:]),
                             batch_input_shape=batch_hw or
                             tuple(x.shape[-2:])))
        out.append(ds)
    return out


def _evaluate(model, imgs, batched):
    """laud_stats of each image: one forward per image, or one padded
    forward of the batch (zeros right and bottom, as mmdet pads)."""
    if not batched:
        stats = []
        for x in imgs:
            with torch.no_grad():
                model(x)
            ds = _samples([x])
            attach_laud_stats(model, ds)
            stats.append(ds[0].laud_stats)
        return stats
    h = max(x.shape[-2] for x in imgs)
    w = max(x.shape[-1] for x in imgs)
    batch = torch.zeros(len(imgs), 3, h, w)
    for i, x in enumerate(imgs):
        batch[i, :, :x.shape[-2], :x.shape[-1]] = x[0]
    with torch.no_grad():
        model(batch)
    ds = _samples(imgs, (h, w))
    attach_laud_stats(model, ds)
    return [d.laud_stats for d in ds]


def _metric(stats):
    m = BackboneLatencyMetric('v100')
    m.process(None, [dict(laud_stats=s) for s in stats])
    return m.compute_metrics(m.results)


@pytest.mark.parametrize('paradigm,gate', [
    ('spatial', 1.0), ('spatial', 0.0), ('channel', 0.0),
    ('layer', torch.tensor([1., 0.]))])
def test_figures_do_not_depend_on_test_batch_or_padding(paradigm, gate):
    """With the gates fixed per image (all on, all off, or per sample) the
    statistics of an image are the same alone and in a padded batch: FLOPs,
    densities and geometries at its own size, hence identical laud/ figures;
    the geometry priced is the image's, not the padded batch's."""
    torch.manual_seed(0)
    gran = dict(spatial=(4, 4, 2, 1), channel=(2, 2, 2, 2)).get(paradigm)
    model = LAUDResNet(50, paradigm=paradigm, granularity=gran,
                       base_channels=16).eval()
    imgs = _images()
    alone_gate = gate[:1] if isinstance(gate, torch.Tensor) else gate
    model.force_gates(alone_gate)
    alone = _evaluate(model, imgs[:1], False)
    model.force_gates(gate[1:] if isinstance(gate, torch.Tensor) else gate)
    alone += _evaluate(model, imgs[1:], False)
    model.force_gates(gate)
    batched = _evaluate(model, imgs, True)
    for a, b, hw in zip(alone, batched, SIZES):
        assert a['input_hw'] == b['input_hw'] == hw
        assert b['batch_input_hw'] == (128, 128)
        assert a['stem'].in_hw == b['stem'].in_hw == hw
        assert a['geometries'] == b['geometries']
        assert a['flops'] == pytest.approx(b['flops'], rel=1e-6)
        assert a['dense_flops'] == pytest.approx(b['dense_flops'], rel=1e-9)
        assert a['block_density'] == pytest.approx(b['block_density'])
    ma, mb = _metric(alone), _metric(batched)
    for k in ('activation_rate', 'backbone_GFLOPs', 'latency_ms',
              'static_latency_ms', 'speedup'):
        assert ma[k] == pytest.approx(mb[k], rel=1e-6), k
    assert ma['pred_hardware'] == 'v100' and ma['pred_batch'] == 1
    assert ma['pred_input'] == '112x104 (mean of 2 sizes)'


def test_learned_spatial_gates_priced_on_the_image_pixels():
    """Learned gates: an image's densities count its own patches only (the
    padded region's patches are cropped away), so its rate is that of its
    own pixels; the batch latency of the old metric (padded geometry) is
    gone."""
    torch.manual_seed(1)
    model = LAUDResNet(50, paradigm='spatial', granularity=(4, 4, 2, 1),
                       base_channels=16).eval()
    for m in model.maskers():  # mixed gates
        torch.nn.init.normal_(m.conv.weight, 0., 0.5)
        torch.nn.init.normal_(m.conv.bias, 0., 0.5)
    imgs = _images()
    batched = _evaluate(model, imgs, True)
    for i, (s, hw) in enumerate(zip(batched, SIZES)):
        assert s['stem'].in_hw == hw
        # recompute block 0's density by hand: its gates cropped to the
        # image's output grid
        g = s['geometries'][0]
        gate = model.blocks[0].last_stats['gate'][i]
        gh, gw = g.patch_grid
        mask = gate[:gh, :gw].repeat_interleave(4, 0).repeat_interleave(
            4, 1)[:g.out_hw[0], :g.out_hw[1]]
        assert s['block_density'][0] == pytest.approx(float(mask.mean()))
        assert 0 < s['flops'] / s['dense_flops'] < 1


def test_metric_batch_size_and_errors():
    with pytest.raises(ValueError, match='batch_size=0'):
        BackboneLatencyMetric('v100', batch_size=0)
    with pytest.raises(ValueError, match='batch_size=None'):
        BackboneLatencyMetric('v100', batch_size=None)


def test_eager_model_prices_the_cpu_path_of_each_family():
    """implementation='eager': each evaluated size is priced by the eager
    model of this project's CPU path (the one validate_predictor checks
    against measured latency) with the family's dense-fallback threshold,
    at the metric's batch size; not the fused model's figures. Errors name
    the key."""
    from laud_mm.latency import LatencyPredictor, get_hardware
    from laud_mm.ops import policy
    torch.manual_seed(1)
    model = LAUDResNet(50, paradigm='spatial', granularity=(4, 4, 2, 1),
                       base_channels=16).eval()
    for m in model.maskers():  # mixed learned gates
        torch.nn.init.normal_(m.conv.weight, 0., 0.5)
        torch.nn.init.normal_(m.conv.bias, 0., 0.5)
    stats = _evaluate(model, _images(), True)
    spec = get_hardware('cpu')
    metric = BackboneLatencyMetric(spec, batch_size=2,
                                   implementation='eager')
    metric.process(None, [dict(laud_stats=s) for s in stats])
    got = metric.compute_metrics(metric.results)
    pred = LatencyPredictor(spec, implementation='eager',
                            spatial_dense_threshold=policy.
                            SPATIAL_DENSE_THRESHOLD)
    # one image per size: its own densities, batches of 2 of that size
    dyn = [pred.predict_backbone(s['geometries'], s['block_density'], 2,
                                 stem=s['stem']).per_image_ms for s in stats]
    static = [pred.predict_static(s['geometries'], 2,
                                  stem=s['stem']).per_image_ms
              for s in stats]
    assert got['latency_ms'] == pytest.approx(sum(dyn) / 2, rel=1e-9)
    assert got['static_latency_ms'] == pytest.approx(sum(static) / 2,
                                                     rel=1e-9)
    assert got['pred_batch'] == 2 and got['pred_hardware'] == spec.name
    fused = BackboneLatencyMetric(spec, batch_size=2)  # same spec, batch
    fused.process(None, [dict(laud_stats=s) for s in stats])
    fused = fused.compute_metrics(fused.results)
    assert got['activation_rate'] == fused['activation_rate']
    assert got['latency_ms'] != pytest.approx(fused['latency_ms'], rel=0.01)
    # RegNetY blocks fall back at their own threshold
    assert metric._predictor_for('regnety').spatial_dense_threshold == \
        policy.REGNETY_SPATIAL_DENSE_THRESHOLD
    with pytest.raises(ValueError, match="kind 'mlp'"):
        metric._predictor_for('mlp')
    with pytest.raises(ValueError, match="implementation='jit'"):
        BackboneLatencyMetric('cpu', implementation='jit')
    with pytest.raises(ValueError, match='calibrate_hardware.py --threads N '
                       '--fit --out nowhere/cpu.yaml'):
        BackboneLatencyMetric('nowhere/cpu.yaml', implementation='eager')
