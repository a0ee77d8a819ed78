"""A config's model outside mmengine's Runner, as the Runner builds it: the
config read with command-line overrides, the default scope's modules
registered, the top-level data preprocessor merged into the model, the
checkpoint loaded; used by latency prediction from measured densities
(:mod:`.prediction`) and the gate pictures (:mod:`.visualization`)."""
import ast
import copy
import os.path as osp
from typing import Mapping, Optional, Sequence, Union

CfgOptions = Union[Mapping, Sequence[str], None]


def parse_cfg_options(items: Sequence[str]) -> dict:
    """``key=value`` strings -> dict; values are Python literals
    (``ast.literal_eval``) or, failing that, strings.

    Raises:
        ValueError: an item without ``=`` (names ``--cfg-options`` and the
            item).
    """
    opts = {}
    for kv in items:
        if '=' not in kv:
            raise ValueError(f'--cfg-options item {kv!r} is not key=value')
        k, v = kv.split('=', 1)
        try:
            v = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            pass
        opts[k] = v
    return opts


def load_config(path: str, cfg_options: CfgOptions = None):
    """Read an mmengine config and merge overrides into it.

    Args:
        path: config file.
        cfg_options: a dict merged as is, or ``key=value`` strings
            (:func:`parse_cfg_options`).

    Returns:
        the :class:`mmengine.config.Config`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a malformed override.
    """
    from mmengine.config import Config
    if not osp.isfile(path):
        raise FileNotFoundError(f'config {path!r} does not exist')
    cfg = Config.fromfile(path)
    if cfg_options:
        if not isinstance(cfg_options, Mapping):
            cfg_options = parse_cfg_options(cfg_options)
        cfg.merge_from_dict(dict(cfg_options))
    return cfg


def build_model(cfg, checkpoint: Optional[str] = None, strict: bool = True):
    """Build ``cfg.model`` in the config's default scope (mmdet unless the
    config names one; that scope's modules registered), on the CPU, in eval
    mode.

    mmpretrain configs keep the data preprocessor (mean / std, BGR to RGB)
    at the top level and mmengine's Runner merges it into the model;
    without it a classifier would see unnormalised pixels. It is merged
    here into a copy of ``cfg.model`` (``cfg`` is left unchanged).

    Args:
        cfg: an mmengine config with ``model``.
        checkpoint: Runner checkpoint or bare state dict to load (path or
            URL); None keeps the initial weights.
        strict: load the checkpoint strictly.

    Raises:
        FileNotFoundError: ``checkpoint`` is a local path that does not
            exist.
    """
    import importlib

    from mmengine.registry import MODELS, init_default_scope
    from mmengine.runner import load_checkpoint

    import laud_mm  # noqa: F401  (registers the LAUD models, safe loading)
    scope = cfg.get('default_scope', 'mmdet')
    importlib.import_module(f'{scope}.utils').register_all_modules(
        init_default_scope=False)
    init_default_scope(scope)
    model_cfg = copy.deepcopy(cfg.model)
    if cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    model = MODELS.build(model_cfg)
    if checkpoint is not None:
        if '://' not in checkpoint and not osp.isfile(checkpoint):
            raise FileNotFoundError(
                f'checkpoint {checkpoint!r} does not exist')
        load_checkpoint(model, checkpoint, map_location='cpu', strict=strict)
    model.eval()
    return model
