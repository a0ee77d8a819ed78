# LAUD-RegNetY-400MF, spatial skipping (S = 4-4-2-1), ImageNet-1k; schedule
# and teacher as the 800MF config, weights torchvision's regnet_y_400mf.
_base_ = ['./laud-regnety-800mf-spatial-s4421_8xb128_in1k.py']
arch = 'regnety_400mf'
student_init = 'torchvision-regnety://regnet_y_400mf'
model = dict(
    backbone=dict(arch=arch),
    head=dict(in_channels=440),
    teacher=dict(config=dict(backbone=dict(arch=arch),
                             head=dict(in_channels=440)),
                 checkpoint=student_init),
    init_cfg=dict(checkpoint=student_init))
