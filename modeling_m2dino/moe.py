"""Task-conditioned Mixture-of-Experts: the MLP of M2DINO's last encoder layers.

Two router readings of the paper are supported (`config.router_mode`):
- `"task"`: the router is a learned table of expert logits per task, so every token of an image uses its
  task's experts (one routing decision per image);
- `"token"`: the router sees each token's hidden state plus a learned task embedding (one decision per token).

Either way the dispatch is the same: routed units are flattened to tokens, sorted by chosen expert, and each
expert that anyone chose runs once on exactly its tokens; experts nobody chose do no work.
"""

import torch
from torch import nn
from torch.nn import functional as F
from transformers.models.dinov3_vit.modeling_dinov3_vit import DINOv3ViTGatedMLP, DINOv3ViTMLP


class M2DinoTaskRouter(nn.Module):
    """Produces router logits from the task (and, in `"token"` mode, from each token)."""

    def __init__(self, config):
        super().__init__()
        self.mode = config.router_mode
        num_tasks, num_experts = len(config.tasks), config.num_experts
        if self.mode == "task":
            self.task_logits = nn.Parameter(torch.zeros(num_tasks, num_experts))
        else:
            self.task_embedding = nn.Parameter(torch.zeros(num_tasks, config.hidden_size))
            self.gate = nn.Linear(config.hidden_size, num_experts, bias=False)

    def forward(self, hidden_states: torch.Tensor, task_ids: torch.LongTensor) -> torch.Tensor:
        """Logits in fp32: (batch, experts) in `"task"` mode, (batch, tokens, experts) in `"token"` mode."""
        if self.mode == "task":
            return self.task_logits.float()[task_ids]
        # gate(x + e_t) = gate(x) + gate(e_t): the task term is computed once per image, not per token.
        token_logits = self.gate(hidden_states)
        task_logits = self.gate(self.task_embedding[task_ids])
        return (token_logits + task_logits[:, None, :]).float()


class TaskConditionedMoE(nn.Module):
    """Replaces a DINOv3 layer's MLP by `num_experts` DINOv3-style MLPs and a task-conditioned top-k router."""

    def __init__(self, config):
        super().__init__()
        self.num_experts = config.num_experts
        self.top_k = config.num_experts_per_tok
        self.norm_topk_prob = config.norm_topk_prob
        self.router = M2DinoTaskRouter(config)
        expert_class = DINOv3ViTGatedMLP if config.use_gated_mlp else DINOv3ViTMLP
        self.experts = nn.ModuleList(expert_class(config) for _ in range(config.num_experts))

    def route(self, router_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k expert indices and their gate weights (fp32 softmax, renormalised over the k chosen)."""
        probs = router_logits.softmax(dim=-1)
        weights, indices = probs.topk(self.top_k, dim=-1)
        if self.norm_topk_prob:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return weights, indices

    def forward(self, hidden_states: torch.Tensor, task_ids: torch.LongTensor) -> torch.Tensor:
        """The mixed expert outputs; the router logits are recorded from the router (`output_router_logits`)."""
        batch_size, num_tokens, hidden_size = hidden_states.shape
        router_logits = self.router(hidden_states, task_ids)
        weights, indices = self.route(router_logits)
        if router_logits.dim() == 2:  # one decision per image: every token of the image inherits it
            weights = weights[:, None, :].expand(-1, num_tokens, -1)
            indices = indices[:, None, :].expand(-1, num_tokens, -1)
        tokens = hidden_states.reshape(-1, hidden_size)
        output = dispatch_to_experts(tokens, weights.reshape(-1, self.top_k), indices.reshape(-1, self.top_k), self.experts)
        return output.view(batch_size, num_tokens, hidden_size)

    def forward_all_tasks(self, hidden_states: torch.Tensor, task_ids: torch.LongTensor) -> torch.Tensor:
        """The layer's output for one shared input under each task of `task_ids`: (tasks, batch, tokens, hidden).

        Every expert that any task picks runs once on the whole batch; tasks differ only in how they mix them.
        """
        num_tasks, (batch_size, num_tokens, hidden_size) = len(task_ids), hidden_states.shape
        repeated = hidden_states.unsqueeze(0).expand(num_tasks, -1, -1, -1).reshape(-1, num_tokens, hidden_size)
        per_sample_tasks = task_ids.repeat_interleave(batch_size)
        router_logits = self.router(repeated, per_sample_tasks) if self.router.mode == "token" else self.router(None, task_ids)
        weights, indices = self.route(router_logits)
        # (tasks * batch, tokens, k) in token mode; (tasks, k) in task mode
        used = torch.unique(indices).tolist()
        expert_outputs = torch.stack([self.experts[e](hidden_states) for e in used])  # (used, batch, tokens, hidden)
        slot = torch.full((self.num_experts,), -1, dtype=torch.long, device=indices.device)
        slot[used] = torch.arange(len(used), device=indices.device)
        if self.router.mode == "task":
            chosen = expert_outputs[slot[indices]]  # (tasks, k, batch, tokens, hidden)
            return (chosen * weights.to(chosen.dtype)[:, :, None, None, None]).sum(dim=1)
        indices = indices.view(num_tasks, batch_size, num_tokens, self.top_k)
        weights = weights.view(num_tasks, batch_size, num_tokens, self.top_k).to(expert_outputs.dtype)
        mixed = torch.zeros(num_tasks, batch_size, num_tokens, hidden_size, dtype=expert_outputs.dtype, device=hidden_states.device)
        batch_index = torch.arange(batch_size, device=indices.device)[None, :, None]
        token_index = torch.arange(num_tokens, device=indices.device)[None, None, :]
        for k in range(self.top_k):
            mixed += weights[..., k, None] * expert_outputs[slot[indices[..., k]], batch_index, token_index]
        return mixed


def dispatch_to_experts(tokens, weights, indices, experts) -> torch.Tensor:
    """sum_k weights[n, k] * experts[indices[n, k]](tokens[n]) for every token n.

    One sort groups the (token, slot) assignments by expert; each chosen expert then runs once on a contiguous
    slice. Moving rows to and from that order is a gather both ways, forward and backward (see `_ToExpertOrder`).
    """
    num_experts, top_k = len(experts), indices.shape[-1]
    flat_experts = indices.reshape(-1)
    order = flat_experts.argsort(stable=True)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=order.device)
    token_of_assignment = order // top_k
    # Counted into a fixed-size tensor (unlike bincount) so that torch.compile sees a static shape.
    counts = torch.zeros(num_experts, dtype=torch.long, device=flat_experts.device)
    counts = counts.index_add_(0, flat_experts, torch.ones_like(flat_experts)).tolist()  # one host sync per layer
    routed = _ToExpertOrder.apply(tokens, token_of_assignment, inverse, top_k).split(counts)
    if torch.compiler.is_compiling():
        # Compiled, the counts are symbolic and cannot be branched on: an unchosen expert runs on zero rows
        # (no arithmetic) and its weights get a zero gradient instead of none.
        expert_outputs = [expert(chunk) for expert, chunk in zip(experts, routed)]
    else:
        expert_outputs = [experts[e](chunk) for e, chunk in enumerate(routed) if counts[e] > 0]
    gates = weights.reshape(-1)[order].to(tokens.dtype).unsqueeze(-1)
    return _FromExpertOrder.apply(torch.cat(expert_outputs) * gates, token_of_assignment, inverse, top_k)


def _sum_assignments(rows, inverse, top_k):
    """Rows in expert order -> per-token sums over the token's top_k assignments (token order)."""
    return rows.index_select(0, inverse).view(-1, top_k, rows.shape[-1]).sum(dim=1)


class _ToExpertOrder(torch.autograd.Function):
    """tokens (T, C) -> their copies in expert order (T * top_k, C).

    Autograd would turn the backward of this gather into an `index_add_` scatter, which on CPU is many times slower
    than a gather; since every token has exactly top_k assignments, the backward is a gather plus a sum over k.
    The pair of functions are each other's backward, so higher-order gradients work too.
    """

    @staticmethod
    def forward(ctx, tokens, token_of_assignment, inverse, top_k):
        ctx.save_for_backward(token_of_assignment, inverse)
        ctx.top_k = top_k
        return tokens.index_select(0, token_of_assignment)

    @staticmethod
    def backward(ctx, grad_rows):
        token_of_assignment, inverse = ctx.saved_tensors
        return _FromExpertOrder.apply(grad_rows, token_of_assignment, inverse, ctx.top_k), None, None, None


class _FromExpertOrder(torch.autograd.Function):
    """Rows in expert order (T * top_k, C) -> per-token sums (T, C); the adjoint of `_ToExpertOrder`."""

    @staticmethod
    def forward(ctx, rows, token_of_assignment, inverse, top_k):
        ctx.save_for_backward(token_of_assignment, inverse)
        ctx.top_k = top_k
        return _sum_assignments(rows, inverse, top_k)

    @staticmethod
    def backward(ctx, grad_tokens):
        token_of_assignment, inverse = ctx.saved_tensors
        return _ToExpertOrder.apply(grad_tokens, token_of_assignment, inverse, ctx.top_k), None, None, None


def load_balancing_loss(router_logits: list[torch.Tensor], num_experts: int, top_k: int) -> torch.Tensor:
    """Switch-Transformer balance loss over all MoE layers: num_experts * sum_e f_e * P_e, where f_e is the
    fraction of routing assignments sent to expert e and P_e its mean router probability (1.0 when balanced)."""
    losses = []
    for logits in router_logits:
        probs = logits.reshape(-1, num_experts).softmax(dim=-1)
        chosen = F.one_hot(probs.topk(top_k, dim=-1).indices, num_experts).sum(dim=1).float()
        fraction_routed = chosen.mean(dim=0) / top_k
        losses.append(num_experts * (fraction_routed * probs.mean(dim=0)).sum())
    return torch.stack(losses).mean()


def router_z_loss(router_logits: list[torch.Tensor]) -> torch.Tensor:
    """ST-MoE z-loss: mean squared log-partition of the router logits, keeping them in a stable range."""
    return torch.stack([torch.logsumexp(logits.float(), dim=-1).pow(2).mean() for logits in router_logits]).mean()


def router_loss(router_logits: tuple[torch.Tensor, ...], config) -> torch.Tensor:
    """The routers' auxiliary training loss: the weighted load-balancing loss plus the weighted z-loss."""
    balance = load_balancing_loss(router_logits, config.num_experts, config.num_experts_per_tok)
    return config.router_aux_loss_coef * balance + config.router_z_loss_coef * router_z_loss(router_logits)


__all__ = [
    "M2DinoTaskRouter",
    "TaskConditionedMoE",
    "dispatch_to_experts",
    "load_balancing_loss",
    "router_loss",
    "router_z_loss",
]
