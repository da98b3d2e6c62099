# cell: indrnn
# Independently recurrent network (Li, Li, Cook, Zhu and Gao 2018, "Independently recurrent
# neural network (IndRNN): building a longer and deeper RNN", CVPR): the recurrence is
# elementwise (u * h), so the optimizer runs the whole time loop in one kernel.
input x: 16
state h: 32

h_next = relu(W @ x + u * h + b)
