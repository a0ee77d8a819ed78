"""The trade-off plot (mmengine evaluation logs -> trade-off PNG,
:mod:`laud_mm.analysis.tradeoff`) and the gate pictures (gates of a LAUD
detector on real coco_tiny images, :mod:`laud_mm.analysis.visualization`)
behind ``tools/analysis_tools/{plot_tradeoff,visualize_masks}.py``."""
import json
import os
import os.path as osp

import numpy as np
import pytest
import torch

from laud_mm.analysis import tradeoff as plot_tradeoff
from laud_mm.analysis import visualization as visualize_masks

from conftest import COCO_TINY, ROOT


def _fake_run(root, name, paradigm, records, test_record=None):
    """A work dir as mmengine writes it: the saved config (with a base
    file's variable that names another paradigm before the model, as a
    dumped config has), the validation records in vis_data/scalars.json
    and vis_data/<timestamp>.json (JSON lines), the test metrics in
    <timestamp>.json."""
    run = osp.join(root, name)
    ts = osp.join(run, '20240101_000000')
    os.makedirs(osp.join(ts, 'vis_data'))
    with open(osp.join(run, f'{name}.py'), 'w') as f:
        p = 'None' if paradigm == 'static' else repr(paradigm)
        f.write("laud_channel_g2 = dict(granularity=2, paradigm='channel')\n"
                f"model = dict(type='laud_mm.LAUDDetector', backbone=dict("
                f"type='laud_mm.LAUDResNet', paradigm={p}))\n")
    # mmengine writes every record twice: scalars.json (visualizer) and
    # <timestamp>.json (logger), both under vis_data
    for log in ('scalars.json', '20240101_000000.json'):
        with open(osp.join(ts, 'vis_data', log), 'w') as f:
            for r in records:
                f.write(json.dumps(r) + '\n')
    if test_record is not None:
        ts2 = osp.join(run, '20240102_000000')
        os.makedirs(ts2)
        with open(osp.join(ts2, '20240102_000000.json'), 'w') as f:
            json.dump(test_record, f)
    return run


def _rec(m, lat, gf, step=1):
    return {'coco/bbox_mAP': m, 'laud/latency_ms': lat,
            'laud/backbone_GFLOPs': gf, 'laud/activation_rate': gf / 80,
            'step': step}


def test_plot_tradeoff_reads_runs_and_writes_png(tmp_path):
    runs = [
        _fake_run(tmp_path, 'spatial_t0.5', 'spatial',
                  [{'loss': 1.0, 'step': 1}, _rec(0.30, 0.8, 50, 12)]),
        _fake_run(tmp_path, 'spatial_t0.7', 'spatial', [_rec(0.35, 1.0, 60)]),
        # a loss record without the metric is no evaluation record
        _fake_run(tmp_path, 'channel_t0.5', 'channel', [{'loss': 2.0}],
                  test_record=_rec(0.33, 0.6, 45)),
        _fake_run(tmp_path, 'layer_t0.5', 'layer', [_rec(0.31, 0.55, 40)]),
        _fake_run(tmp_path, 'r50_static', 'static', [_rec(0.37, 1.2, 80)]),
    ]
    pts = plot_tradeoff.collect(runs)
    assert [p['paradigm'] for p in pts] == \
        ['spatial', 'spatial', 'channel', 'layer', 'static']
    assert pts[0]['value'] == 0.30 and pts[0]['latency_ms'] == 0.8
    assert pts[2]['value'] == 0.33 and pts[2]['gflops'] == 45
    out = str(tmp_path / 'fig' / 'tradeoff.png')
    assert len(plot_tradeoff.plot_tradeoff(runs, out=out, annotate=True)) \
        == 5
    import matplotlib.image as mpimg
    img = mpimg.imread(out)
    assert img.shape[0] > 200 and img.shape[1] > 600   # two panels
    # explicit paradigms and a metric the runs do not have
    pts = plot_tradeoff.collect(runs[:2], paradigms=['layer', 'layer'])
    assert {p['paradigm'] for p in pts} == {'layer'}
    with pytest.raises(KeyError, match='accuracy/top1'):
        plot_tradeoff.collect(runs[:1], metric='accuracy/top1')
    with pytest.raises(ValueError, match='--paradigm has 1 entries'):
        plot_tradeoff.collect(runs[:2], paradigms=['layer'])
    with pytest.raises(FileNotFoundError, match='does not exist'):
        plot_tradeoff.collect([str(tmp_path / 'missing')])
    # several evaluation records: refused, never the latest silently; the
    # test json of the run, given explicitly, is plotted
    both = _fake_run(tmp_path, 'two_evals', 'layer', [_rec(0.1, 9, 9)],
                     test_record=_rec(0.33, 0.6, 45))
    with pytest.raises(ValueError, match='2 evaluation records'):
        plot_tradeoff.collect([both])
    test_json = osp.join(both, '20240102_000000', '20240102_000000.json')
    pts = plot_tradeoff.collect([test_json])
    assert pts[0]['value'] == 0.33
    # the label names the config and checkpoint (its run dir and file) the
    # run evaluated
    with open(osp.join(both, '20240102_000000', 'config.py'), 'w'):
        pass
    os.makedirs(osp.join(both, '20240102_000000', 'vis_data'))
    with open(osp.join(both, '20240102_000000', 'vis_data', 'config.py'),
              'w') as f:
        f.write("load_from = 'work_dirs/x/epoch_4.pth'\n")
    pt = plot_tradeoff.collect([test_json])[0]
    assert pt['checkpoint'] == 'work_dirs/x/epoch_4.pth'
    assert pt['label'] == 'two_evals.py / x/epoch_4.pth'
    assert '| 1 | two_evals.py / x/epoch_4.pth | layer | 0.3300 |' in \
        plot_tradeoff.format_points([pt])


def test_visualize_masks_on_real_images(tmp_path, coco_tiny):
    cfg = osp.join(ROOT, 'configs/demo/faster-rcnn_laud-r50-spatial_coco-tiny.py')
    opts = {'test_dataloader.dataset.pipeline.1.scale': (256, 160)}
    model, pipeline = visualize_masks.build_model_and_pipeline(
        cfg, 'none', opts)
    torch.manual_seed(0)
    files = visualize_masks.list_images([osp.join(COCO_TINY, 'val2017')], 2)
    # random masker weights, so that the gates vary over the image
    for m in model.backbone.maskers():
        torch.nn.init.normal_(m.conv.weight, std=0.5)
        torch.nn.init.zeros_(m.conv.bias)
    recs = visualize_masks.run_images(model, pipeline, files)
    assert len(recs) == 2
    r = recs[0]
    h, w = r['image'].shape[:2]
    assert max(h, w) <= 256 and r['image'].dtype == np.uint8
    maps = visualize_masks.stage_pixel_maps(r)
    assert len(maps) == 4 and all(m.shape == (h, w) for m in maps)
    # the stage map averages the blocks' gates: its mean matches the mean
    # block density up to the cropped padding
    for s, m in enumerate(maps):
        dens = np.mean([b['density'] for b in r['blocks'] if b['stage'] == s])
        assert 0.0 <= m.min() and m.max() <= 1.0
        assert abs(m.mean() - dens) < 0.2
    summary = visualize_masks.block_summary(recs)
    assert len(summary) == 16 and summary[0]['block'] == '1.0'
    for s in summary:
        assert 0 <= s['flops_ratio_mean'] <= 1 + 1e-6
    out = tmp_path / 'vis'
    written = visualize_masks.visualize_masks(cfg, 'none', [files[0]],
                                              out_dir=str(out),
                                              cfg_options=opts)
    assert len(written) == 3
    names = sorted(os.listdir(out))
    assert 'block_activation.png' in names and 'block_activation.json' in names
    assert any(n.endswith('_spatial_gates.png') for n in names)
    with open(out / 'block_activation.json') as f:
        js = json.load(f)
    assert js['paradigm'] == 'spatial' and len(js['blocks']) == 16
    # fresh maskers are keep-biased: every block computes everything
    assert js['activation_rate'] == pytest.approx(1.0)


def test_visualize_masks_rejects_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope'):
        visualize_masks.list_images([str(tmp_path / 'nope')], 2)
    with pytest.raises(FileNotFoundError, match='checkpoint'):
        visualize_masks.build_model_and_pipeline(
            osp.join(ROOT, 'configs/demo/'
                     'faster-rcnn_laud-r50-spatial_coco-tiny.py'),
            str(tmp_path / 'missing.pth'))
    with pytest.raises(ValueError, match='--max-images=0'):
        visualize_masks.visualize_masks('unused.py', 'none', [], max_images=0)


def test_visualize_masks_classifier_gets_the_top_level_preprocessor(
        imagenette):
    """mmpretrain configs hold the data preprocessor (mean / std, BGR to RGB)
    at the top level, where the Runner merges it into the model; the tool
    must do the same, else the gates see unnormalised pixels (a trained
    spatial classifier then skipped almost everything: act. rate 0.12 instead
    of the 0.49 that tools/test.py measured)."""
    from mmengine.config import Config
    cfg_path = osp.join(ROOT, 'configs/demo/laud-r50-spatial_imagenette.py')
    want = Config.fromfile(cfg_path).data_preprocessor
    model, pipeline = visualize_masks.build_model_and_pipeline(cfg_path,
                                                               'none')
    dp = model.data_preprocessor
    assert dp.mean.flatten().tolist() == pytest.approx(want['mean'])
    assert dp.std.flatten().tolist() == pytest.approx(want['std'])
    files = visualize_masks.list_images(
        [osp.join(imagenette, 'val', 'n01440764')], 1)
    data = pipeline(dict(img_path=files[0], img_id=0))
    x = dp(dict(inputs=[data['inputs']], data_samples=[data['data_samples']]),
           False)['inputs']
    assert abs(float(x.mean())) < 3 and float(x.std()) < 3   # normalised
    recs = visualize_masks.run_images(model, pipeline, files)
    assert len(recs) == 1 and len(recs[0]['blocks']) == 16
