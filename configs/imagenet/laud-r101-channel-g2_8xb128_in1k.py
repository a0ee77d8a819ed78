# LAUD-ResNet-101 version of laud-r50-channel-g2_8xb128_in1k.py: student from
# torchvision's ResNet-101, distilled from it (paper sec. 3.5).
_base_ = ['./laud-r50-channel-g2_8xb128_in1k.py']
target_rate = 0.5
model = dict(
    backbone=dict(depth=101),
    sparsity_loss=dict(target_rate=target_rate),
    teacher=dict(config='mmpretrain::resnet/resnet101_8xb32_in1k.py',
                 checkpoint='torchvision://resnet101'),
    init_cfg=dict(type='Pretrained', checkpoint='torchvision-cls://resnet101'))
