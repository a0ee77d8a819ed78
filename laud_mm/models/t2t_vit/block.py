"""The LAUD transformer encoder layer of T2T-ViT: token skipping (spatial),
head skipping (channel) and layer skipping, and the static layer when no
paradigm is set.

The layer is mmpretrain's ``T2TTransformerLayer`` (same parameters and
names, so T2T-ViT checkpoints load unchanged) plus a masker::

    x1 = x  + attn(ln1(x))        attn = proj(softmax(q k^T / s) v), H heads
    x2 = x1 + ffn(ln2(x1))        ffn  = fc2(GELU(fc1(.)))

**Masked-dense** (training, and evaluation without ``dynamic_inference``) is
defined so that skipping the work computes exactly the same function:

- spatial (token gates m, (N, L), the class token's gate fixed to 1): every
  token is computed, but a skipped token is (a) **not a key / value**: the
  attention weights are ``exp(l - max_kept) * m_key / sum_keys(exp(l -
  max_kept) * m_key)`` (:func:`masked_softmax`, exactly the softmax over the
  kept keys, differentiable w.r.t. m for the straight-through Gumbel gate),
  and (b) **not updated**: both residual branches are multiplied by m, so a
  skipped token leaves the layer unchanged. Dynamic inference gathers the
  kept tokens of each sample, runs ln1-qkv-attention (over the kept keys
  only)-proj-ln2-FFN on them alone and scatters them back.
- channel (head gates g, (N, H)): each head's attention output (N, L, dh)
  is multiplied by its gate before ``proj``, so a skipped head contributes
  nothing (a sample with every head off adds ``proj.bias``); the FFN is
  dense. Dynamic inference computes q, k, v, the attention and the proj
  input columns of the kept heads only (weights sliced per gate pattern).
- layer (gate g, (N,)): both residual branches are multiplied by g, so a
  skipped layer is the identity. Dynamic inference runs the layer only for
  the samples whose gate is on.

**Attention scale**: see :mod:`laud_mm.models.t2t_vit.attention`.

Source: paper sec. 3.2 ("Generalization in Transformer architectures":
token skipping by indexing and selection, head (channel) skipping, layer
skipping, following AdaViT) and "Experiments on vision Transformers";
docs/method.md sec. 1 (Gumbel gates, keep-biased maskers).
"""
from typing import Optional

import torch
from mmpretrain.models.backbones.t2t_vit import T2TTransformerLayer

from ...structures.geometry import PARADIGMS, TokenLayerGeometry
from ..layers.block import LAUDBlockMixin
from ..layers.maskers import build_token_masker
from . import flops  # noqa: F401  (registers the layer's FLOPs count)
from .attention import attention_logit_divisor, masked_softmax
from .dynamic import dynamic_t2t_layer_forward, static_t2t_layer_forward


class LAUDT2TLayer(LAUDBlockMixin, T2TTransformerLayer):
    """T2T-ViT encoder layer with a masker (mmpretrain's
    ``T2TTransformerLayer`` parameters and names plus ``masker.*``).

    Args:
        embed_dims, num_heads, feedforward_channels, input_dims, drop_rate,
            attn_drop_rate, drop_path_rate, num_fcs, qkv_bias, qk_scale,
            act_cfg, norm_cfg, init_cfg: as mmpretrain's layer.
        paradigm: 'spatial' (token skipping), 'channel' (head skipping),
            'layer' or None (static layer).
        num_extra_tokens: leading tokens that are never skipped (1: the
            class token).

    Shapes:
        forward: (N, L, D) -> (N, L, D).

    Attributes:
        last_stats: after each forward, a dict with 'flops' (N,) FLOPs
            computed per sample (differentiable in training), 'dense' (float)
            dense FLOPs per sample, 'density' (N,) the mask density
            (fraction of patch tokens / heads kept, or the layer gate),
            'gate' the raw gates and 'geometry' the
            :class:`TokenLayerGeometry`, as the CNN blocks record them.
        dynamic_inference: when True and not training, run the dynamic
            (skip-the-work) path of :mod:`laud_mm.models.t2t_vit.dynamic`.

    Raises:
        ValueError: unknown paradigm; ``input_dims`` (a value shortcut layer)
            with a paradigm; ``num_heads`` not dividing ``embed_dims``;
            token skipping without an extra (class) token.
    """

    def __init__(self, embed_dims: int, num_heads: int,
                 feedforward_channels: int, *args,
                 paradigm: Optional[str] = None, num_extra_tokens: int = 1,
                 **kwargs):
        if paradigm is not None and paradigm not in PARADIGMS:
            raise ValueError(f'LAUDT2TLayer: paradigm={paradigm!r} is not one '
                             f'of {PARADIGMS} or None')
        if isinstance(num_heads, bool) or not isinstance(num_heads, int) or \
                num_heads < 1 or embed_dims % num_heads:
            raise ValueError(f'LAUDT2TLayer: num_heads={num_heads!r} must be '
                             f'a positive divisor of embed_dims={embed_dims}')
        input_dims = args[0] if args else kwargs.get('input_dims')
        if paradigm is not None and input_dims is not None:
            raise ValueError(f'LAUDT2TLayer: input_dims={input_dims!r} (a '
                             f'value-shortcut T2T-module layer) cannot skip; '
                             f'encoder layers have input_dims=None')
        if paradigm == 'spatial' and num_extra_tokens < 1:
            raise ValueError(f'LAUDT2TLayer: paradigm=spatial needs a class '
                             f'token (num_extra_tokens={num_extra_tokens!r}): '
                             f'it is always kept, so every sample keeps one '
                             f'key')
        super().__init__(embed_dims, num_heads, feedforward_channels, *args,
                         **kwargs)
        self.num_extra_tokens = int(num_extra_tokens)
        self.init_laud_block(paradigm, None, None if paradigm is None
                             else build_token_masker(
                                 paradigm, embed_dims, num_heads,
                                 self.num_extra_tokens))

    # ------------------------------------------------------------- geometry
    def make_geometry(self, num_tokens: int) -> TokenLayerGeometry:
        """:class:`TokenLayerGeometry` for ``num_tokens`` tokens per sample
        (class token included)."""
        return TokenLayerGeometry(
            stage=self.stage, index=self.index, num_tokens=num_tokens,
            embed_dims=self.attn.embed_dims, num_heads=self.attn.num_heads,
            ffn_channels=self.ffn.feedforward_channels,
            paradigm=self.paradigm, num_extra_tokens=self.num_extra_tokens)

    def gate_densities(self, gate: torch.Tensor, geom: TokenLayerGeometry):
        """(density, None, None): the kept fraction of patch tokens / heads
        per sample, or the layer gate."""
        return (gate.mean(dim=1) if gate.dim() == 2 else gate), None, None

    # ------------------------------------------------------------ branches
    def attn_branch(self, h: torch.Tensor,
                    key_mask: Optional[torch.Tensor] = None,
                    head_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Attention residual branch on ``h = ln1(x)``, masked-dense.

        Args:
            h: (N, L, D) normalised tokens.
            key_mask: (N, L) token gates: skipped tokens are no keys.
            head_mask: (N, H) head gates: multiply each head's output.

        Returns:
            (N, L, D) ``out_drop(gamma1(proj_drop(proj(attention))))``, as
            mmpretrain's ``MultiheadAttention`` (no value shortcut).
        """
        attn = self.attn
        n, L, _ = h.shape
        nh, dh = attn.num_heads, attn.head_dims
        qkv = attn.qkv(h).reshape(n, L, 3, nh, dh).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        w = masked_softmax(q @ k.transpose(-2, -1) /
                           attention_logit_divisor(attn), key_mask)
        if self.training and attn.attn_drop > 0:
            w = torch.dropout(w, attn.attn_drop, True)
        o = w @ v  # (N, H, L, dh)
        if head_mask is not None:
            o = o * head_mask[:, :, None, None].to(o.dtype)
        o = attn.proj(o.transpose(1, 2).reshape(n, L, attn.embed_dims))
        return attn.out_drop(attn.gamma1(attn.proj_drop(o)))

    def ffn_branch(self, h: torch.Tensor) -> torch.Tensor:
        """FFN residual branch on ``h = ln2(x)``: (N, L, D) -> (N, L, D),
        ``dropout_layer(gamma2(layers(h)))`` as mmcv's ``FFN``."""
        f = self.ffn
        return f.dropout_layer(f.gamma2(f.layers(h)))

    # -------------------------------------------------------------- forward
    def static_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The dense block, masker ignored, BN folded (eval; statistics
        untouched): :func:`static_t2t_layer_forward`."""
        return static_t2t_layer_forward(self, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.static_mode:
            return self.static_forward(x)
        if x.dim() != 3:
            raise ValueError(f'LAUDT2TLayer: x must be (N, L, D), got '
                             f'{tuple(x.shape)}')
        n, L = x.shape[0], x.shape[1]
        geom = self.geometry(L)
        op_flops = self.op_flops(L)
        if self.paradigm is None:
            out = super().forward(x)
            self.record_static_stats(n, x.device, geom, op_flops)
            return out
        if self.dynamic_inference and not self.training:
            out, gate = dynamic_t2t_layer_forward(self, x, geom)
        else:
            gate = self.masker(x)
            out = self.masked_dense(x, gate)
        self.record_stats(gate, geom, op_flops)
        return out

    def masked_dense(self, x: torch.Tensor, gate: torch.Tensor
                     ) -> torch.Tensor:
        """Dense compute times the masks (training and masked-dense eval; see
        the module docstring for the exact definition per paradigm).

        Args:
            x: (N, L, D) tokens.
            gate: spatial (N, L - extra), channel (N, H), layer (N,).

        Returns:
            (N, L, D).
        """
        key_mask = head_mask = res_mask = None
        if self.paradigm == 'spatial':
            e = self.num_extra_tokens
            key_mask = torch.cat([gate.new_ones(gate.shape[0], e), gate], 1)
            res_mask = key_mask[:, :, None].to(x.dtype)
        elif self.paradigm == 'channel':
            head_mask = gate
        else:
            res_mask = gate[:, None, None].to(x.dtype)
        a = self.attn_branch(self.ln1(x), key_mask, head_mask)
        x = x + (a if res_mask is None else a * res_mask)
        f = self.ffn_branch(self.ln2(x))
        return x + (f if res_mask is None else f * res_mask)
