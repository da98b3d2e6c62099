# cell: mut1
# MUT1, the best of the architectures found by search in Jozefowicz, Zaremba and Sutskever
# 2015, "An empirical exploration of recurrent network architectures", ICML. tanh(x) is added
# to a hidden-size vector, so the input has the hidden size.
input x: 32
state h: 32

z = sigmoid(W_xz @ x + b_z)
r = sigmoid(W_xr @ x + W_hr @ h + b_r)
h_next = tanh(W_hh @ (r * h) + tanh(x) + b_h) * z + h * (1 - z)
