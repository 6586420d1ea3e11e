"""Theory: the few equations behind every page, short."""

import streamlit as st

st.title("Theory in six equations")
st.markdown("A net $f(x, w)$ with weights $w \\in \\mathbb{R}^n$. On a probe batch $X = (x_1 \\dots x_B)$ stack the "
            "outputs, mapped by $\\varphi$ (identity, softmax or $\\sqrt{\\text{softmax}}$) and scaled by $1/\\sqrt{B}$. "
            "Their Jacobian $J \\in \\mathbb{R}^{k\\times n}$, $k = B\\,m$, defines the **functional metric**")
st.latex(r"G(w) = J^\top J, \qquad \delta w^\top G\, \delta w \approx \tfrac1B \sum_b \lVert \varphi f(x_b, w+\delta w) - \varphi f(x_b, w)\rVert^2 .")
st.markdown("With $\\varphi = \\sqrt{\\text{softmax}}$, $G$ is one quarter of the Fisher information (Fisher–Rao). "
            "The **functional distance** is measured for real, not linearized:")
st.latex(r"D(w, w') = \operatorname{mean}_x \lVert \varphi f(x, w) - \varphi f(x, w')\rVert^2 .")
st.markdown("Each step of a path solves the **tangent problem** (a trust region, $\\varepsilon = 0.01$ in the paper):")
st.latex(r"\theta^\star = \arg\min_\theta\; \theta^\top G\, \theta - \beta\, \theta^\top v \quad \text{s.t.}\quad \theta^\top\theta \le \varepsilon")
st.markdown("KKT gives $(G + \\mu I)\\theta = \\tfrac{\\beta}{2} v$ with $\\mu \\ge 0$. Since $\\operatorname{rank} G \\le k \\ll n$, "
            "$K = JJ^\\top = U\\,\\mathrm{diag}(\\lambda)\\,U^\\top$ is small and Woodbury gives")
st.latex(r"\theta(\mu) = \frac{\beta}{2\mu}\Big(v - J^\top U\, \mathrm{diag}\big(\tfrac{1}{\lambda+\mu}\big)\, U^\top J v\Big), \qquad \lVert\theta(\mu)\rVert^2 = \varepsilon")
st.markdown("a scalar secular equation in $\\mu$. The **direction field** $v$ says where to go:")
st.latex(r"v_{\text{sparsify}} = -w \odot \mathbb{1}_T, \qquad v_{\text{restore}} = -\nabla_w D(w, w_{\text{ref}}), \qquad v_{\text{learn}} = -\nabla_w L_B(w)")
st.markdown("The path $w_{t+1} = w_t + \\theta_t$ has **length**")
st.latex(r"L = \sum_t \sqrt{\theta_t^\top G_t\, \theta_t} = \sum_t \lVert J_t \theta_t\rVert")
st.markdown("Small $\\beta$ ⇒ small $\\mu$ ⇒ natural-gradient-like steps that follow the metric; large $\\beta$ ⇒ "
            "nearly Euclidean steps along $v$. Of several candidate paths to a sparse net, the paper picks the "
            "shortest. The engine: `geodesic/core/metric.py` (J, K, D), `geodesic/core/tangent.py` (θ*), `geodesic/core/path.py` (the walk).")
