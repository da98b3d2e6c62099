# cell: gru
# Gated recurrent unit (Cho, van Merrienboer, Gulcehre, Bahdanau, Bougares, Schwenk and Bengio
# 2014, "Learning phrase representations using RNN encoder-decoder for statistical machine
# translation", EMNLP): the reset gate scales h before the matrix. Cho et al. write
# h' = z h + (1 - z) h~; here z weighs the candidate, as the lectures and the zoo's gru do
# (the same cell with z renamed 1 - z).
input x: 16
state h: 32

z, r = split(sigmoid(W_g @ [h, x] + b_g), 2)
hc = tanh(W_c @ [r * h, x] + b_c)
h_next = (1 - z) * h + z * hc
