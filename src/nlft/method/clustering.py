"""Phrase clustering (docs/method.md section 5) in linear work, with exactly the reference walk's result.

The reference widens every seed s into a phrase: a walk left from s-1, then right from s+1, with a running
centre that starts at h_s and moves to (centre + h_j) / 2 at every absorbed neighbour j, a neighbour being
absorbed while the criterion holds (cosine distance above the radius for ``distance``, at most the radius for
``similarity``). The mask is the union of the walks. Walked seed by seed this is quadratic whenever walks are long
(similar last-layer states under ``similarity``, unrelated states under ``distance``): each of s seeds walks
about n tokens.

Three observations make it linear, and exact:

1. **Sweeps.** Walks never interact, so they may run in any order. One sweep over the positions from right to
   left runs every left walk, each joining when the sweep reaches its seed; one sweep from left to right runs the
   right walks, each starting at its seed with the centre its left walk ended with. The right sweep stops where
   everything to its right is covered already.
2. **Blocks in closed form.** While a walk keeps absorbing, its centre before the k-th comparison of a block is
   ``2^-(k-j) (c0 - T_j) + T_k`` with ``T_k = sum_{m<k} 2^-(k-m) h_m`` the same for every walk: one small matrix
   product gives every walk's every cosine in a block of positions, without a loop over positions.
3. **Certified decisions.** Those cosines are of *proxies*, not of the reference's float computation. Each walk
   carries a proven bound on how far the centre the reference would compute (float32, operation by operation)
   can be from its proxy: the distance at the start of the block, halving at every step, plus the rounding of
   the reference's additions and of the proxy's own products. A decision is taken from the proxy only where its
   cosine is further from the threshold than that bound — with the worst-case rounding of both cosines — allows
   the reference's to be; otherwise the walk is recomputed exactly from its last exact state, as the reference
   computes it, and decides from that. Walks whose proxies come close are followed as one (the bound grows by
   their distance): two walks that have absorbed the same tokens forget where they started, so groups stay few.

The result is the reference's mask, exactly; the work is a few matrix products per block of positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

BLOCK = 128  # the most positions per block
SUB = 16  # the prefix sums of a block: products over runs this long
PROBES = 8  # directions the merge's candidate filter projects onto
FIRST_STEPS = 4  # at most this many comparisons each walk makes one at a time before it joins the blocks
MERGE_TOLERANCE = 1e-3  # proxies this close (relative) are followed as one group; the bound keeps it exact


def _rowdot(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Row-wise inner products, each a float dot product of length d (the rounding every bound here assumes):
    as a batched matrix product for many rows (memory-bound there: it streams the rows once), else products summed."""
    if A.shape[0] > 1024:
        return torch.bmm(A[:, None, :], B[:, :, None]).view(A.shape[0])
    return (A * B).sum(-1)


def _criterion(cos: torch.Tensor, mode: str, radius: float) -> torch.Tensor:
    # As the reference computes it: the cosine in the states' precision, then 1 - cos against the radius in Python
    # floats (double) — a float32 comparison would round the radius and could decide a tie differently.
    d = 1.0 - cos.double()
    return (d > radius) if mode == "distance" else (d <= radius)


class _Member:
    """One seed's walk: where its exact state was last known, and where its left walk stopped."""

    __slots__ = ("origin", "phase", "index", "centre", "left_stop")

    def __init__(self, origin: int, centre: torch.Tensor, index: int):
        self.origin = origin
        self.phase, self.index, self.centre = "L", index, centre  # exact centre before comparing seq[index]
        self.left_stop: int | None = None


class _Sequence:
    """The states in a sweep's order: as they are (R), or from the right end (L) without copying them all."""

    def __init__(self, hidden: torch.Tensor, reverse: bool):
        self.h, self.reverse, self.n = hidden, reverse, hidden.shape[0]

    def __getitem__(self, key):
        if isinstance(key, slice):
            a, b = key.start or 0, self.n if key.stop is None else min(key.stop, self.n)
            return self.h[self.n - b : self.n - a].flip(0) if self.reverse else self.h[a:b]
        return self.h[self.n - 1 - key] if self.reverse else self.h[key]

    def index(self, index: list[int]) -> torch.Tensor:
        """Positions of sequence indices."""
        idx = torch.tensor(index, device=self.h.device)
        return self.n - 1 - idx if self.reverse else idx

    def rows(self, index: list[int]) -> torch.Tensor:
        return self.h.index_select(0, self.index(index))  # a row gather: faster than advanced indexing on CPU


class _Clusterer:
    def __init__(self, hidden: torch.Tensor, mode: str, radius: float):
        self.h = hidden
        self.n, self.d = hidden.shape
        self.mode, self.radius = mode, radius
        u = torch.finfo(hidden.dtype).eps / 2  # unit roundoff
        self.u = u
        self.gamma_d = self.d * u / (1 - self.d * u)
        self.hh = _rowdot(hidden, hidden)  # squared norms, by position
        self.max_norm = float(self.hh.max().sqrt()) if self.n else 0.0
        self.seq = {
            "L": _Sequence(hidden, True),
            "R": _Sequence(hidden, False),
        }  # L from the right end, R from the left
        self.hh_seq = {"L": self.hh.flip(0), "R": self.hh}  # squared norms, by sequence index
        k = torch.arange(SUB + 1, dtype=torch.float64)
        weights = torch.exp2(-(k[:, None] - k[None, :SUB]))  # 2^-(k-m)
        self.lower = torch.where(k[:, None] > k[None, :SUB], weights, 0.0).to(hidden.dtype).to(hidden.device)
        self.decay = torch.exp2(-k).to(hidden.dtype).to(hidden.device)  # 2^-k
        r = torch.arange(BLOCK // SUB + 1, dtype=torch.float64)
        # chain[r, q] = 2^-(SUB (r - 1 - q)) for q < r: a run's start from the earlier runs' (local) ends.
        chain = torch.where(r[:, None] > r[None, :], torch.exp2(-SUB * (r[:, None] - 1 - r[None, :])), 0.0)
        self.chain = chain.to(hidden.dtype).to(hidden.device)

    vecdot = staticmethod(_rowdot)

    def prefix(self, H: torch.Tensor) -> torch.Tensor:
        """T[k] = sum_{m<k} 2^-(k-m) H[m] for k = 0 .. len(H): a small matrix product within each run of SUB
        positions, the runs' starting values from a product with the runs' ends (each start is the previous
        run's end plus its start halved SUB times). Its rounding is within the block bound's allowance for a
        product of length BLOCK."""
        size, d = H.shape
        runs = -(-size // SUB)
        if size % SUB:
            padded = H.new_zeros(runs * SUB, d)
            padded[:size] = H
        else:
            padded = H
        runs_of = padded.view(runs, SUB, d)
        out = H.new_empty(runs * SUB + 1, d)
        body = out[: runs * SUB].view(runs, SUB, d)
        torch.matmul(self.lower[:SUB], runs_of, out=body)  # within each run: body[r, 0] = 0
        ends = torch.matmul(self.lower[SUB], runs_of)  # [runs, d]: each run's own sum at its end
        starts = self.chain[:runs, :runs] @ ends  # [runs, d]: T at each run's start
        body.addcmul_(self.decay[:SUB, None], starts[:, None])  # 2^-k start: exact, so one rounding per add
        if size % SUB == 0:  # T[size] is past the last run's rows
            out[runs * SUB] = ends[-1] + starts[-1] * float(self.decay[SUB])
        return out[: size + 1]  # otherwise T[size] is a row of the last run (from its rows before size only)

    # -- exact replays ---------------------------------------------------------------------------------------
    def exact(self, members: list[_Member], phase: str, index: int) -> list[torch.Tensor]:
        """The centres the reference computes for ``members`` before comparing seq[phase][index]: replayed from each
        member's last exact state (which then moves here), the members side by side — the updates are element-wise,
        so they round exactly as the reference's one-vector updates do."""
        out: list[torch.Tensor | None] = [None] * len(members)
        for src in ("L", "R"):
            todo = [(x, m) for x, m in enumerate(members) if m.phase == src]
            if not todo:
                continue
            C = torch.stack([m.centre for _, m in todo])
            begin = [m.index for _, m in todo]
            end = [index if phase == src else m.left_stop for _, m in todo]
            self._replay(C, self.seq[src], begin, end)
            for row, (x, m) in enumerate(todo):
                if src == "L" and phase == "R":  # the left walk is done: the right one starts at the seed
                    m.phase, m.index, m.centre = "R", m.origin + 1, C[row]
                else:
                    m.phase, m.index, m.centre = phase, index, C[row]
                    out[x] = C[row]
        if any(c is None for c in out):  # left-walk members now at the start of their right walks
            rest = [(x, m) for x, m in enumerate(members) if out[x] is None]
            C = torch.stack([m.centre for _, m in rest])
            self._replay(C, self.seq["R"], [m.index for _, m in rest], [index] * len(rest))
            for row, (x, m) in enumerate(rest):
                m.phase, m.index, m.centre = phase, index, C[row]
                out[x] = C[row]
        return out

    @staticmethod
    def _replay(C: torch.Tensor, seq: torch.Tensor, begin: list[int], end: list[int]) -> None:
        """Row r of C absorbs seq[begin[r]], ..., seq[end[r] - 1], in order, in place: (c + h) / 2."""
        if not begin:
            return
        b = torch.tensor(begin)
        e = torch.tensor(end)
        for j in range(min(begin), max(end)):
            rows = ((b <= j) & (j < e)).nonzero().squeeze(1)
            if rows.numel():
                C[rows] = (C[rows] + seq[j]) / 2

    def decide(self, centre: torch.Tensor, h: torch.Tensor) -> bool:
        """The reference's own decision: one cosine of two vectors, as it computes it."""
        return bool(_criterion(F.cosine_similarity(centre[None], h[None]), self.mode, self.radius))

    # -- the first comparisons, one at a time ----------------------------------------------------------------
    def first_steps(self, phase, starts, covered, ends, stop):
        """Walks whose centre is exact (bound 0) make their first FIRST_STEPS comparisons here, all together, the
        decisions certified as in the blocks (or taken from the exact centre); what survives is returned, sorted,
        for the blocks. Walks that stop at once — most of them, with realistic states — never reach a block."""
        seq, n = self.seq[phase], self.n
        out = [w for w in starts if w[2] > 0]
        live = []
        for j, c, b, members in starts:
            if b == 0:
                (m,) = members
                if phase == "R":
                    m.phase, m.index, m.centre = "R", j, c
                live.append((j, c, m))
        # Two float computations of one cosine of exact vectors differ by at most this (see _block, with kappa 1).
        err = 2 * (9 * self.gamma_d + 4 * self.u)
        cc_known = None  # the centres' squared norms, where they are known already
        if live:
            pos = [j for j, _, _ in live]
            walkers = [m for _, _, m in live]
            if (
                phase == "L"
            ):  # every left walk starts at its seed's own state: C and |C|^2 are rows of h and hh
                origins = torch.tensor([m.origin for m in walkers], device=self.h.device)
                C, cc_known = self.h.index_select(0, origins), self.hh.index_select(0, origins)
            else:
                C = torch.stack([c for _, c, _ in live])
        for _ in range(FIRST_STEPS):
            if not live:
                break
            done = [j >= n or (stop is not None and stop(j)) for j in pos]
            if any(done):
                for x, m in enumerate(walkers):
                    if done[x]:
                        ends[m] = (C[x], 0.0)
                        if phase == "L":
                            m.left_stop = n
                keep = [x for x, d in enumerate(done) if not d]
                if not keep:
                    live = []
                    break
                C, pos, walkers = C[keep], [pos[x] for x in keep], [walkers[x] for x in keep]
                if cc_known is not None:
                    cc_known = cc_known[keep]
            H = seq.rows(pos)
            dot, hh = _rowdot(C, H), self.hh[seq.index(pos)]
            cc, cc_known = (_rowdot(C, C) if cc_known is None else cc_known), None
            cos = dot / torch.sqrt(torch.clamp(cc * hh, min=1e-16))
            take = _criterion(cos, self.mode, self.radius).tolist()
            certain = (((1.0 - cos.double() - self.radius).abs() > err) & (cc * hh > 1e-12)).tolist()
            went = [take[x] if certain[x] else self.decide(C[x], H[x]) for x in range(len(pos))]
            keep = [x for x, w in enumerate(went) if w]
            for x, (j, m) in enumerate(zip(pos, walkers)):
                if went[x]:
                    covered[j] = True
                else:
                    ends[m] = (C[x], 0.0)
                    if phase == "L":
                        m.left_stop = j
            # The update is element-wise: it rounds as the reference's one-vector update does (halving is exact).
            C = C[keep].add_(H[keep]).mul_(0.5) if len(keep) < len(pos) else (C + H).mul_(0.5)
            pos, walkers = [pos[x] + 1 for x in keep], [walkers[x] for x in keep]
            rows = C.unbind(0)  # every row's view at once
            for x, m in enumerate(walkers):
                m.index, m.centre = pos[x], rows[x]
            live = walkers
            if len(walkers) > len(went) / 2:
                break  # most walks go on: long walks, which the blocks follow far more cheaply
        live = [(j, m.centre, m) for j, m in zip(pos, walkers)] if live else []
        out += [(j, c, 0.0, [m]) for j, c, m in live]
        out.sort(key=lambda w: w[0])
        return out

    # -- one sweep ---------------------------------------------------------------------------------------------
    def sweep(
        self, phase: str, starts: list[tuple[int, torch.Tensor, float, list[_Member]]], covered, stop=None
    ):
        """Run the walks of ``phase`` (starts: (sequence index, centre, bound, members), sorted by index), marking
        what they absorb in ``covered`` (a list over sequence indices). ``stop(i)`` says when nothing from
        sequence index i on can be added. Returns the members' end states: member -> (centre, bound)."""
        seq, n = self.seq[phase], self.n
        ends: dict[_Member, tuple[torch.Tensor, float]] = {}
        pending = self.first_steps(phase, starts, covered, ends, stop)
        groups: list[tuple[torch.Tensor, float, list[_Member]]] = []
        i = pending[0][0] if pending else n
        while groups or pending:
            if not groups:
                i = max(i, pending[0][0])
            if i >= n or (stop is not None and stop(i)):
                for c, b, members in groups + [(c, b, ms) for _, c, b, ms in pending]:
                    for m in members:
                        ends[m] = (c, b)
                        if phase == "L":
                            m.left_stop = n
                break
            size = min(BLOCK, n - i)
            walks = [(0, c, b, ms) for c, b, ms in groups]
            while pending and pending[0][0] < i + size:
                j, c, b, ms = pending.pop(0)
                walks.append((j - i, c, b, ms))
            groups = []
            while walks:  # walks recomputed exactly within the block come back round as new walks
                walks, survivors = self._block(phase, seq, i, size, walks, covered, ends)
                groups += survivors
            groups = self._merge(groups)
            i += size
        return ends

    def _block(self, phase, seq, i, size, walks, covered, ends):
        """Advance ``walks`` (offset in block, centre, bound, members) through positions i .. i+size-1."""
        H = seq[i : i + size]
        T = self.prefix(H)  # T[k] = sum_{m<k} 2^-(k-m) H[m]
        offs = torch.tensor([w[0] for w in walks], device=H.device)
        C0 = torch.stack([w[1] for w in walks])
        c0_norm = float(torch.linalg.vector_norm(C0, dim=1).max())
        bound0 = torch.tensor([w[2] for w in walks], dtype=torch.float64, device=H.device)
        V = C0.sub_(T.index_select(0, offs))  # C0 is a fresh stack
        ks = torch.arange(size + 1, device=H.device)
        steps = ks[None, :] - offs[:, None]  # [W, size+1]
        valid = steps >= 0
        a = torch.exp2(-steps.clamp(min=0).to(H.dtype)) * valid  # 2^-(k-j), 0 before the walk joins
        # Cosines of the proxies r = a v + T_k with h_k, from inner products (no [W, size, d] tensor).
        ak = a[:, :size]
        vh = V @ H.T
        # v.T_k = sum_{m<k} 2^-(k-m) v.h_m: the prefix of the row products, not a second product with d columns.
        # Its distance from the float product v.T_k that it replaces is at most |v| max|h| (gamma_d + 5 gamma_k):
        # the row products' rounding, the prefix's own over them, and T's. The certificate below allows for that
        # by reading |T_k| as at least max|h| and gamma_d as gamma_d + 5 gamma_k.
        vt = self.prefix(vh.T.contiguous())[:size].T
        vecdot = self.vecdot
        th, tt, vv = vecdot(T[:size], H), vecdot(T[:size], T[:size]), vecdot(V, V)
        hh = self.hh_seq[phase][i : i + size]
        rh = ak * vh + th
        rr = (ak * ak * vv[:, None] + 2 * ak * vt + tt).clamp(min=0)
        cos = rh / torch.sqrt(torch.clamp(rr * hh, min=1e-16))
        take = _criterion(cos, self.mode, self.radius)
        # The certificate (see the module docstring), in float64.
        u = self.u
        gk = (size + 2) * u / (1 - (size + 2) * u)
        g = self.gamma_d + 5 * gk
        m_all = max(self.max_norm, c0_norm)
        e_block = 2 * u * m_all + 4 * (gk + 3 * u) * m_all
        bound = a.double() * bound0[:, None] + e_block  # [W, size+1]
        r_norm = torch.sqrt(rr.double()).clamp(min=1e-300)
        t_norm = tt.double().sqrt().clamp(min=self.max_norm)
        kappa = (ak.double() * vv.double().sqrt()[:, None] + t_norm) / r_norm
        err = 3 * g * (kappa * kappa + 1) + 3 * g + 4 * u + 2.01 * bound[:, :size] / r_norm
        margin = (1.0 - cos.double() - self.radius).abs()
        certain = (margin > err) & (rr.double() * hh.double() > 1e-12) & torch.isfinite(cos)
        event = valid[:, :size] & ~(take & certain)
        first = torch.where(
            event.any(1), event.double().argmax(1), torch.full_like(offs, size).double()
        ).long()
        offs_l, first_l = offs.tolist(), first.tolist()
        certain_l = certain.gather(1, first.clamp(max=size - 1)[:, None]).squeeze(1).tolist()
        again, survivors = [], []
        r_first = torch.addcmul(
            T.index_select(0, first), a.gather(1, first[:, None]), V
        )  # the proxies where each walk's event is
        b_first = bound.gather(1, first[:, None]).squeeze(1).tolist()
        r_rows = r_first.unbind(0)
        for w, (off, k) in enumerate(zip(offs_l, first_l)):
            if k > off:
                covered[i + off : i + k] = [True] * (k - off)
            members = walks[w][3]
            if k == size:
                survivors.append((r_rows[w], b_first[w], members))
            elif certain_l[w]:  # a certified stop: every member stops here
                for m in members:
                    ends[m] = (r_rows[w], b_first[w])
                    if phase == "L":
                        m.left_stop = i + k
            else:  # too close to call: each member decides from its exact centre
                h_k = H[k]
                for m, c in zip(members, self.exact(members, phase, i + k)):
                    if self.decide(c, h_k):
                        covered[i + k] = True
                        c = (c + h_k) / 2
                        m.index, m.centre = i + k + 1, c
                        if k + 1 < size:
                            again.append((k + 1, c, 0.0, [m]))
                        else:
                            survivors.append((c, 0.0, [m]))
                    else:
                        ends[m] = (c, 0.0)
                        if phase == "L":
                            m.left_stop = i + k
        return again, survivors

    def _merge(self, groups):
        """Groups whose proxies are within MERGE_TOLERANCE (relative) are followed as one; the survivor's bound
        grows by their distance. Candidates come from a projection onto PROBES orthonormal directions (which never
        lengthens a difference); distances of candidates from element-wise differences (exact for close vectors),
        enlarged by their summation's rounding."""
        if len(groups) < 2:
            return groups
        C = torch.stack([c for c, _, _ in groups])
        norms = torch.sqrt(self.vecdot(C, C).double())
        tol = (MERGE_TOLERANCE * norms).tolist()
        # Only a filter (a merge is decided from the distance itself): the projection in the states' precision,
        # its rounding (at most gamma_d of the norm per direction) allowed for on both sides.
        P = C @ self.probes(C.shape[1], C.device)
        gap = torch.cdist(P, P) if len(groups) > 256 else (P[:, None] - P[None]).square().sum(-1).sqrt()
        slack = MERGE_TOLERANCE + 4 * PROBES**0.5 * self.gamma_d
        near = (gap.double() <= slack * norms[:, None] * (1 + 1e-6) + 1e-12).tolist()
        alive = [True] * len(groups)
        out = []
        for x in range(len(groups)):
            if not alive[x]:
                continue
            c, b, members = groups[x]
            members = list(members)
            ys = [y for y in range(x + 1, len(groups)) if alive[y] and near[x][y]]
            if ys:
                dist = (
                    torch.linalg.vector_norm(
                        C.index_select(0, torch.tensor(ys, device=C.device)) - c, dim=1
                    ).double()
                    * (1 + 4 * self.gamma_d)
                    + 1e-30
                )
                for y, dxy in zip(ys, dist.tolist()):
                    if dxy <= tol[x]:
                        # y's members are within its bound of its proxy, which is at most this far from x's.
                        b = max(b, groups[y][1] + dxy)
                        members += groups[y][2]
                        alive[y] = False
            out.append((c, b, members))
        return out

    def probes(self, d: int, device) -> torch.Tensor:
        if getattr(self, "_probes", None) is None:
            g = torch.Generator().manual_seed(0)
            q = torch.linalg.qr(torch.randn(d, PROBES, generator=g, dtype=torch.float64))[0]
            self._probes = q.to(self.h.dtype).to(device)
        return self._probes


def cluster_mask(
    hidden: torch.Tensor, seeds: torch.Tensor, mode: str = "distance", radius: float = 0.4
) -> torch.Tensor:
    """cluster(S): the seeds widened into phrases over the hidden states, exactly as the reference walk widens them."""
    seeds = seeds.to(torch.bool)
    n = seeds.shape[0]
    if mode == "off" or n == 0 or not bool(seeds.any()):
        return seeds.clone()
    if mode not in ("distance", "similarity"):
        raise ValueError(f"unknown cluster mode {mode!r}")
    h = hidden.detach()
    if h.dtype in (torch.float16, torch.bfloat16):
        h = h.float()
    work = _Clusterer(h, mode, radius)
    origins = seeds.nonzero().squeeze(1).tolist()
    members = {s: _Member(s, h[s], n - s) for s in origins}

    # Left walks: sequence index n - s is position s - 1, the first neighbour of seed s.
    left = [False] * n
    starts = [(n - s, h[s], 0.0, [members[s]]) for s in reversed(origins)]
    ends = work.sweep("L", starts, left)
    hits = [bool(x) for x in seeds.tolist()]
    for x, t in enumerate(left):
        if t:
            hits[n - 1 - x] = True

    # Right walks, from s + 1 with the centre the left walk ended with; no walk adds anything past the point from
    # which everything is covered already.
    suffix = [False] * (n + 1)
    suffix[n] = True
    for x in range(n - 1, -1, -1):
        suffix[x] = suffix[x + 1] and hits[x]
    right = [False] * n
    starts = [(s + 1, ends[members[s]][0], ends[members[s]][1], [members[s]]) for s in origins if s + 1 < n]
    work.sweep("R", starts, right, stop=lambda i: suffix[i])
    for x, t in enumerate(right):
        if t:
            hits[x] = True
    return torch.tensor(hits, dtype=torch.bool, device=seeds.device)


def reference_walk(hidden: torch.Tensor, seeds: torch.Tensor, mode: str, radius: float) -> torch.Tensor:
    """docs/method.md section 5 as the authors' code runs it: one seed, one comparison (one ``.item()``) at a time.
    The executable definition ``cluster_mask`` is tested equal to (``tests/method/test_clustering.py``) and timed
    against (``bench/bench_cluster.py``); never used in training."""
    n = hidden.shape[0]
    out = set()
    for i in torch.nonzero(seeds).flatten().tolist():
        center = hidden[i]
        for step in (-1, 1):
            j = i + step
            while 0 <= j < n:
                d = 1 - F.cosine_similarity(center[None], hidden[j][None]).item()
                if not ((d > radius) if mode == "distance" else (d <= radius)):
                    break
                out.add(j)
                center = (center + hidden[j]) / 2
                j += step
        out.add(i)
    mask = torch.zeros(n, dtype=torch.bool, device=hidden.device)
    if out:
        mask[sorted(out)] = True
    return mask
