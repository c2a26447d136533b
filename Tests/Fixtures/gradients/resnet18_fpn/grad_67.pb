Bfpn.inner_blocks.3.0.biasJ@öA@cÂBº@Y×A,ÓA*¬EAÃŸÀp	İÀ¡
œAÿbASf±@ ‹¾XÑ@A(õÃ¿œ˜ÁîƒTÁ