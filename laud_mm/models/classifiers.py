"""LAUD image classifier: mmpretrain's ``ImageClassifier`` with the sparsity
loss and distillation from a frozen static teacher (ImageNet pretraining).

Source: paper sec. 3.5 (training objective), docs/method.md sec. 2:

    L = CE(z, y) + alpha * L_sparse + beta * T^2 * KL(softmax(z_t / T) || softmax(z / T))

alpha = 10 (``sparsity_loss.loss_weight``), beta = 0.5 and T = 4.0
(``distill_loss``); the teacher is the static network the student starts from
(torchvision's ResNet in the paper), frozen.
"""
import copy
import os.path as osp
import warnings
from typing import Dict, List, Optional, Union

import torch
from mmengine.registry import DefaultScope
from mmengine.config import Config, ConfigDict
from mmengine.logging import MMLogger
from mmengine.runner.checkpoint import load_checkpoint
from mmpretrain.models.classifiers import ImageClassifier

from ..registry import MODELS
from .layers.checkpoint import CLASSIFIER_REVISE_KEYS
from .layers.stats import attach_laud_stats

_TEACHER_KEYS = ('config', 'checkpoint')


def _teacher_model_cfg(config) -> dict:
    """The teacher's model config from ``teacher.config``: a model dict, an
    mmengine Config (its ``model``), a config file path, or an OpenMMLab
    package config such as ``'mmpretrain::resnet/resnet50_8xb32_in1k.py'``.

    Raises:
        ValueError: naming ``teacher.config`` and its value when the file is
            missing, it has no ``model``, or the value has another type.
    """
    if isinstance(config, str):
        if '::' in config:
            from mmengine.hub import get_config
            try:
                cfg = get_config(config)
            except Exception as e:  # noqa: BLE001 (re-raised with the key)
                raise ValueError(f'LAUDImageClassifier: teacher.config='
                                 f'{config!r} cannot be read: {e}') from e
        elif osp.isfile(config):
            cfg = Config.fromfile(config)
        else:
            raise ValueError(f'LAUDImageClassifier: teacher.config={config!r}: '
                             f'no such config file')
        if 'model' not in cfg:
            raise ValueError(f'LAUDImageClassifier: teacher.config={config!r} '
                             f"has no 'model' entry")
        config = cfg.model
    elif isinstance(config, Config):
        if 'model' not in config:
            raise ValueError("LAUDImageClassifier: teacher.config (a Config) "
                             "has no 'model' entry")
        config = config.model
    if not isinstance(config, dict) or 'type' not in config:
        raise ValueError(f'LAUDImageClassifier: teacher.config={config!r} must '
                         f"be a model dict with 'type', a Config or a config "
                         f'file path')
    cfg = copy.deepcopy(dict(config)) if not isinstance(config, ConfigDict) \
        else config.to_dict()
    if cfg.get('teacher') is not None:
        raise ValueError('LAUDImageClassifier: the teacher model has a teacher '
                         'itself (teacher.config.teacher); give it the static '
                         'network only')
    # the teacher's own pretrained init would be overwritten anyway; do not
    # let it try to download weights
    cfg.pop('init_cfg', None)
    return cfg


def build_teacher(teacher: dict, load: bool = True) -> torch.nn.Module:
    """Build the frozen static teacher (paper sec. 3.5).

    Args:
        teacher: ``dict(config=<model dict | Config | config path>,
            checkpoint=<path | URL (e.g. 'torchvision://resnet50') | None>)``.
            A torchvision ResNet state dict is mapped to mmpretrain's
            classifier keys on load (``fc`` -> ``head.fc``, the rest ->
            ``backbone``); an mmpretrain / laud_mm classifier checkpoint
            loads as it is. Every teacher parameter and buffer must be in the
            checkpoint (strict loading). ``checkpoint=None`` keeps the
            teacher randomly initialised (a warning is logged): only for
            smoke tests and offline demos.
        load: read the checkpoint now; False: only check that a local file
            exists (nothing is downloaded), and leave the loading to
            :func:`load_teacher_weights` (the classifier does it when
            training starts, so building, inspecting and testing a config
            work offline).

    Returns:
        The teacher in eval mode with ``requires_grad=False`` on the CPU.

    Raises:
        ValueError: missing or unknown keys, a missing checkpoint file, or a
            checkpoint that does not match the teacher (names the key).
    """
    if isinstance(teacher, ConfigDict):
        teacher = teacher.to_dict()
    if not isinstance(teacher, dict) or 'config' not in teacher:
        raise ValueError(f'LAUDImageClassifier: teacher={teacher!r} must be '
                         f"dict(config=..., checkpoint=...)")
    unknown = sorted(set(teacher) - set(_TEACHER_KEYS))
    if unknown:
        raise ValueError(f'LAUDImageClassifier: teacher has unknown keys '
                         f'{unknown}; allowed: {list(_TEACHER_KEYS)}')
    ckpt = teacher.get('checkpoint')
    if ckpt is not None:
        if not isinstance(ckpt, str):
            raise ValueError(f'LAUDImageClassifier: teacher.checkpoint={ckpt!r} '
                             f'must be a path, a URL or None')
        if '://' not in ckpt and not osp.isfile(ckpt):
            raise ValueError(f'LAUDImageClassifier: teacher.checkpoint={ckpt!r}:'
                             f' no such file')
    model_cfg = _teacher_model_cfg(teacher['config'])
    import mmpretrain.models  # noqa: F401  (registers mmpretrain's models)
    from mmpretrain.registry import MODELS as PRETRAIN_MODELS
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = PRETRAIN_MODELS.build(model_cfg)
    model.eval()
    model.requires_grad_(False)
    model.laud_teacher_checkpoint = ckpt
    model.laud_teacher_loaded = False
    if load:
        load_teacher_weights(model)
    return model


def load_teacher_weights(model: torch.nn.Module) -> None:
    """Load a teacher built by :func:`build_teacher` from its checkpoint
    (once; a teacher without a checkpoint keeps PyTorch's initialisation,
    with a warning).

    Raises:
        ValueError: the checkpoint does not match the teacher (names it).
    """
    if model.laud_teacher_loaded:
        return
    ckpt = model.laud_teacher_checkpoint
    logger = MMLogger.get_current_instance()
    if ckpt is None:
        # PyTorch's default initialisation; init_weights() is skipped (it
        # would log every parameter of the throw-away teacher)
        msg = ('LAUDImageClassifier: teacher.checkpoint is None: the teacher '
               'is randomly initialised (distillation then only regularises; '
               'give the static network\'s weights for real training)')
        logger.warning(msg)
        warnings.warn(msg)
    else:
        try:
            load_checkpoint(model, ckpt, map_location='cpu', strict=True,
                            logger=logger, revise_keys=CLASSIFIER_REVISE_KEYS)
        except (RuntimeError, KeyError, ValueError) as e:
            raise ValueError(f'LAUDImageClassifier: teacher.checkpoint={ckpt!r}'
                             f' does not match the teacher model: {e}') from e
    model.laud_teacher_loaded = True


@MODELS.register_module()
class LAUDImageClassifier(ImageClassifier):
    """mmpretrain ``ImageClassifier`` with a LAUD backbone, the sparsity loss
    and knowledge distillation from a frozen static teacher.

    State-dict keys are mmpretrain's (``backbone.*``, ``neck.*``,
    ``head.*``); the teacher is held outside the module tree, so it is not
    in ``state_dict()``, ``parameters()`` nor the saved checkpoints, is not
    touched by ``init_weights()``/``train()``, but follows
    ``.to()/.cuda()/.half()`` (``_apply`` is forwarded to it).

    Args:
        backbone: backbone config, a LAUD backbone (e.g.
            ``dict(type='laud_mm.LAUDResNet', depth=50, paradigm='spatial',
            granularity=(4, 4, 2, 1), out_indices=(3,), norm_eval=False)``).
        neck, head, pretrained, train_cfg, data_preprocessor, init_cfg: as
            mmpretrain's ``ImageClassifier``.
        sparsity_loss: config of :class:`laud_mm.SparsityLoss` (paper:
            ``target_rate=t, loss_weight=10.``, per-block bounds on); None for
            a static backbone.
        teacher: ``dict(config=..., checkpoint=...)`` (see
            :func:`build_teacher`); None: no distillation.
        distill_loss: config of :class:`laud_mm.DistillationLoss` (paper:
            ``temperature=4.0, loss_weight=0.5``); used only with a teacher.

    Training (``loss``) returns mmpretrain's head losses (``loss`` = CE),
    ``loss_sparsity``, ``loss_distill`` and ``act_rate`` (batch-mean backbone
    FLOPs ratio, logged, not summed). Prediction (``predict``) writes
    ``laud_stats`` into each data sample (see
    :func:`laud_mm.models.detectors.attach_laud_stats`) for
    :class:`laud_mm.BackboneLatencyMetric`.

    Shapes:
        inputs (N, 3, H, W) -> logits (N, num_classes) in ``mode='tensor'``.

    Raises:
        TypeError: the backbone has no ``activation_stats`` (not LAUD).
        ValueError: ``sparsity_loss`` with a static backbone; bad teacher or
            loss configs (names the key and value); teacher logits of another
            shape than the student's (at the first training step).
    """

    def __init__(self, backbone: dict, neck: Optional[dict] = None,
                 head: Optional[dict] = None,
                 sparsity_loss: Optional[dict] = None,
                 teacher: Optional[dict] = None,
                 distill_loss: Optional[dict] = dict(
                     type='laud_mm.DistillationLoss', temperature=4.0,
                     loss_weight=0.5),
                 pretrained: Optional[str] = None,
                 train_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[Union[dict, List[dict]]] = None):
        # mmpretrain's parts (ClsDataPreprocessor, heads) must resolve in
        # mmpretrain's registry even when another scope (mmdet) is current
        with DefaultScope.overwrite_default_scope('mmpretrain'):
            super().__init__(backbone=backbone, neck=neck, head=head,
                             pretrained=pretrained, train_cfg=train_cfg,
                             data_preprocessor=data_preprocessor,
                             init_cfg=init_cfg)
        if not hasattr(self.backbone, 'activation_stats'):
            raise TypeError(
                f'LAUDImageClassifier needs a LAUD backbone (e.g. '
                f"type='laud_mm.LAUDResNet'), got {type(self.backbone).__name__}")
        if not self.with_head:
            raise ValueError('LAUDImageClassifier: head=None; a classification '
                             'head is required')
        dynamic = bool(getattr(self.backbone, 'paradigm', None))
        if sparsity_loss is not None and not dynamic:
            raise ValueError('LAUDImageClassifier: sparsity_loss is set but '
                             'the backbone has paradigm=None (static)')
        self.sparsity_loss = MODELS.build(sparsity_loss) \
            if sparsity_loss is not None else None
        self._teacher: List[torch.nn.Module] = []
        self.distill_loss = None
        if teacher is not None:
            if distill_loss is None:
                raise ValueError('LAUDImageClassifier: teacher is set but '
                                 'distill_loss=None')
            self.distill_loss = MODELS.build(distill_loss)
            # the weights are read when training starts (init_weights or
            # the first teacher forward): no download at build time
            self._teacher.append(build_teacher(teacher, load=False))

    # ------------------------------------------------------------ teacher
    def init_weights(self) -> None:
        """mmengine's weight initialisation (the student's ``init_cfg``),
        then the teacher's checkpoint: both happen when a Runner starts
        training, never while a config is loaded or the model is built."""
        super().init_weights()
        if self._teacher:
            load_teacher_weights(self._teacher[0])

    @property
    def teacher(self) -> Optional[torch.nn.Module]:
        """The frozen teacher (not a submodule), or None."""
        return self._teacher[0] if self._teacher else None

    def _apply(self, fn, *args, **kwargs):
        # .to() / .cuda() / .half() / .float(): the teacher follows
        super()._apply(fn, *args, **kwargs)
        if self._teacher:
            self._teacher[0]._apply(fn, *args, **kwargs)
        return self

    def train(self, mode: bool = True):
        super().train(mode)
        if self._teacher:
            self._teacher[0].eval()
        return self

    def teacher_logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """(N, num_classes) teacher logits on the preprocessed ``inputs``,
        without gradients, in eval mode.

        Raises:
            RuntimeError: if no teacher is configured.
        """
        if not self._teacher:
            raise RuntimeError('LAUDImageClassifier: no teacher configured')
        t = self._teacher[0]
        load_teacher_weights(t)
        t.eval()
        with torch.no_grad():
            out = t(inputs, mode='tensor')
        if isinstance(out, (tuple, list)):
            out = out[-1]
        return out.detach()

    # ------------------------------------------------------------- train
    def loss(self, inputs: torch.Tensor, data_samples) -> Dict[str, torch.Tensor]:
        """CE + alpha * sparsity + beta * T^2 * KL (paper sec. 3.5).

        Args:
            inputs: (N, 3, H, W) preprocessed images.
            data_samples: mmpretrain ``DataSample`` list with ``gt_label``
                (or ``gt_score`` after batch augments).

        Returns:
            dict with the head's losses, ``loss_sparsity`` (if configured),
            ``loss_distill`` (if a teacher is configured) and ``act_rate``.
        """
        feats = self.extract_feat(inputs)
        cls_score = self.head(feats)
        if hasattr(self.head, '_get_loss'):  # mmpretrain ClsHead family
            losses = self.head._get_loss(cls_score, data_samples)
        else:
            losses = self.head.loss(feats, data_samples)
        stats = self.backbone.activation_stats()
        if self.sparsity_loss is not None:
            losses.update(self.sparsity_loss(stats))
        if self._teacher:
            t_logits = self.teacher_logits(inputs)
            if t_logits.shape != cls_score.shape:
                raise ValueError(
                    f'LAUDImageClassifier: teacher logits '
                    f'{tuple(t_logits.shape)} and student logits '
                    f'{tuple(cls_score.shape)} differ (teacher.config must '
                    f'have the same number of classes)')
            losses.update(self.distill_loss(cls_score, t_logits))
        losses['act_rate'] = stats['activation_rate'].detach().mean()
        return losses

    # ----------------------------------------------------------- predict
    def predict(self, inputs: torch.Tensor, data_samples=None, **kwargs):
        """mmpretrain's prediction plus ``laud_stats`` in every data sample's
        metainfo (activation statistics of this batch, for
        :class:`laud_mm.BackboneLatencyMetric`)."""
        results = super().predict(inputs, data_samples, **kwargs)
        attach_laud_stats(self.backbone, results)
        return results
