# LAUD-ResNet-101 version of laud-r50-spatial-s4421_8xb128_in1k.py: student from
# torchvision's ResNet-101, distilled from it (paper sec. 3.5).
_base_ = ['./laud-r50-spatial-s4421_8xb128_in1k.py']
student_init = 'torchvision-cls://resnet101'
teacher_checkpoint = 'torchvision://resnet101'
model = dict(
    backbone=dict(depth=101),
    teacher=dict(config='mmpretrain::resnet/resnet101_8xb32_in1k.py',
                 checkpoint=teacher_checkpoint),
    init_cfg=dict(checkpoint=student_init))
