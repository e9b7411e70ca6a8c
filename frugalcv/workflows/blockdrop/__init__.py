"""BlockDrop (dissertation Ch. 2): pretrain -> curriculum policy learning -> joint finetuning -> evaluate.

Stage entry points (each trains its modules in place over any iterable of (images, labels)
batches or an ``epoch -> iterable`` callable such as ``data.TensorBatches``):

- ``pretrain.pretrain(resnet, data, PretrainConfig)``
- ``curriculum.learn_policy(resnet, policy_net, data, CurriculumConfig)``  (ResNet frozen)
- ``finetune.finetune(resnet, policy_net, data, FinetuneConfig)``
- ``evaluate.evaluate_policy(resnet, policy_net, data) -> PolicyEvaluation``, ``report.write_report``

Names are not re-exported here: ``blockdrop.pretrain`` stays the module, not the function.
"""
