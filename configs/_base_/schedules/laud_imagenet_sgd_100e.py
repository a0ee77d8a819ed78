# The ImageNet fine-tuning schedule of the LAUD CNNs (ResNet, RegNetY):
# 100 epochs from the torchvision weights, lr = 0.01 x batch / 128 with
# cosine decay, the RegNet paper's weight decay 5e-5 (paper appendix B.2);
# SGD with Nesterov momentum 0.9 and 8 GPUs x 128 images = batch 1024,
# lr 0.08, as in the authors' released runs (docs/method.md sec. 2).
_base_ = ['mmpretrain::_base_/schedules/imagenet_bs256_coslr.py']

optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.08, momentum=0.9, nesterov=True,
                   weight_decay=5e-5))
param_scheduler = dict(type='CosineAnnealingLR', T_max=100, by_epoch=True,
                       begin=0, end=100)
train_cfg = dict(by_epoch=True, max_epochs=100, val_interval=1)
auto_scale_lr = dict(base_batch_size=1024)
