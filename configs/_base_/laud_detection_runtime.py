# Shared by every LAUD detection config: register laud_mm, fix the Gumbel
# temperature at 0.1 (paper sec. 4.3 / docs/method.md sec. 3).
custom_imports = dict(imports=['laud_mm'], allow_failed_imports=False)
custom_hooks = [dict(type='laud_mm.GumbelTemperatureHook', tau0=0.1, tau1=0.1)]
