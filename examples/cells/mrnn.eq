# cell: mrnn
# Multiplicative RNN (Sutskever, Martens and Hinton 2011, "Generating text with recurrent neural
# networks", ICML): the input chooses the recurrent matrix through the factorization
# W_hh(x) = W_hm diag(W_mx x) W_mh.
input x: 16
state h: 32
param W_mx: 32 x 16   # the size of m (the factorization), here the hidden size

m = (W_mx @ x) * (W_mh @ h)
h_next = tanh(W_hm @ m + W_hx @ x + b)
