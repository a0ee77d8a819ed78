# Demo: LAUD-ResNet-50, layer skipping, target rate 0.5, on imagenette_subset;
# teacher / initialisation as laud-r50-spatial_imagenette.py.
_base_ = ['./laud-r50-spatial_imagenette.py']
model = dict(backbone=dict(_base_.laud_layer))
