"""The paper's pictures drawn from plain arrays: Figure 3 (conv1's kernels), the learning
curves, Figure 4 (retrieval rows), and the one PNG writer and font they share."""
