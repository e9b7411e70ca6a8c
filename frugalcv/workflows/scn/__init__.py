"""SCN (spatial context networks, dissertation Ch. 5): pair mining, pretrain, train and evaluate stages."""
