"""What a run looks like: plots of the search and the student (``plots``), the self-contained ``report.html``
(``html``), and live TensorBoard scalars (``tensorboard``)."""
