# cell: mlstm
# Multiplicative LSTM (Krause, Lu, Murray and Renals 2016, "Multiplicative LSTM for sequence
# modelling", arXiv:1609.07959): the mRNN's input-dependent intermediate state m replaces h in
# every gate of an LSTM (with biases, as implementations add them).
input x: 16
state h: 32, c: 32
param W_mx: 32 x 16   # the size of m (the factorization), here the hidden size
output h_next

m = (W_mx @ x) * (W_mh @ h)
hh = W_hx @ x + W_hm @ m + b_h
i = sigmoid(W_ix @ x + W_im @ m + b_i)
f = sigmoid(W_fx @ x + W_fm @ m + b_f)
o = sigmoid(W_ox @ x + W_om @ m + b_o)
c_next = f * c + i * tanh(hh)
h_next = tanh(c_next) * o
