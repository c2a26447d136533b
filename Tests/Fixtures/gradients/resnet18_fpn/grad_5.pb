Bbody.layer1.0.bn1.biasJ g;	Áþ1Ÿ@æXM@1£ˆ?î´
AàH>4xÃ@ª¡ËÀ