"""
Synthetic 7-DOF robot-arm trajectories for Scratch-1.

Physical story
--------------
A Franka-Panda-like arm (7 revolute joints, real DH parameters below) is driven by a
joint-velocity controller that refreshes ONE joint per control tick, round-robin: the action
at tick t is the velocity command for joint t mod 7, and every joint keeps moving at its last
commanded velocity (zero-order hold) until its next turn. A motion planner gives each joint a
cruise speed, one of NUM_LEVELS evenly spaced levels of its normalised range [-1, 1], and at
each of the joint's turns switches it to a different level with probability SWITCH_PROB
(otherwise it re-issues the same command). The arm starts at rest near its home pose; the joint
angles integrate the held velocities (dt = DT, clipped to the joint limits), and the state is
the 7 joint angles plus the end-effector position from the forward-kinematics chain.

Tokens
------
The action token is the 256-bin discretisation of the normalised command u in [-1, 1]:
token = round((u + 1) / 2 * 255), so u = token / 255 * 2 - 1.

Statistical design
------------------
* Given the past, the next token is almost determined: it is the command for joint
  (t+1) mod 7, which was last issued 7 ticks earlier, i.e. it equals the token 6 positions
  before the current one with probability 1 - SWITCH_PROB. A model needs one attention head
  that looks a fixed relative distance back (easy with RoPE), plus a copy.
* Given only the current token, the next one is unpredictable: consecutive tokens command
  different joints, whose levels are independent and uniform, so a bigram model cannot beat
  ln(NUM_LEVELS) nats. The same holds for attention that sees no past, or cannot tell
  positions apart (no positional information): 1/7 of the past are the right joint.
* Best achievable (Bayes) loss per target: ln(NUM_LEVELS) for the first 6 targets of a window
  (that joint has not been commanded yet), then H(SWITCH_PROB) + SWITCH_PROB * ln(NUM_LEVELS - 1).
  See `entropy_floor`.
"""

import argparse
import math
import os
import pickle

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

NUM_JOINTS = 7
NUM_BINS = 256
NUM_LEVELS = 8        # cruise-speed levels per joint, evenly spaced in [-1, 1]
SWITCH_PROB = 0.02    # chance that a joint's command changes at its turn
DT = 0.05             # control tick, seconds
MAX_SPEED = 0.5       # rad/s for a normalised command of 1

# Franka Emika Panda, modified (Craig) DH: a_{i-1}, d_i, alpha_{i-1}; the flange adds d = 0.107.
DH_A = np.array([0.0, 0.0, 0.0, 0.0825, -0.0825, 0.0, 0.088, 0.0])
DH_D = np.array([0.333, 0.0, 0.316, 0.0, 0.384, 0.0, 0.0, 0.107])
DH_ALPHA = np.array([0.0, -1, 1, 1, -1, 1, 1, 0.0]) * (math.pi / 2)
Q_HOME = np.array([0.0, -math.pi / 4, 0.0, -3 * math.pi / 4, 0.0, math.pi / 2, math.pi / 4])
Q_LOW = np.array([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973])
Q_HIGH = np.array([2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973])

LEVELS = np.linspace(-1.0, 1.0, NUM_LEVELS)                     # normalised commands
LEVEL_TOKENS = np.round((LEVELS + 1) / 2 * (NUM_BINS - 1)).astype(np.int64)


def forward_kinematics_7dof(joint_angles):
    """End-effector (flange) position of the Panda arm: (..., 7) angles -> (..., 3) metres.

    Accepts a numpy array or a torch tensor and returns the same kind.
    """
    is_torch = isinstance(joint_angles, torch.Tensor)
    q = joint_angles.detach().cpu().numpy() if is_torch else np.asarray(joint_angles)
    q = q.astype(np.float64)
    # Chain of link transforms RotX(alpha) TransX(a) RotZ(theta) TransZ(d), kept as the three
    # columns x, y, z of the rotation and the position p, each of shape (..., 3).
    x, y, z = (np.broadcast_to(np.eye(3)[i], q.shape[:-1] + (3,)) for i in range(3))
    position = np.zeros(q.shape[:-1] + (3,))
    for i in range(len(DH_A)):
        ca, sa = math.cos(DH_ALPHA[i]), math.sin(DH_ALPHA[i])
        y, z = ca * y + sa * z, ca * z - sa * y                      # RotX(alpha)
        position = position + DH_A[i] * x + DH_D[i] * z              # TransX(a), TransZ(d)
        if i < NUM_JOINTS:                                            # RotZ(theta); flange: 0
            c, s = np.cos(q[..., i:i + 1]), np.sin(q[..., i:i + 1])
            x, y = c * x + s * y, c * y - s * x
    return torch.from_numpy(position).to(joint_angles.dtype) if is_torch else position


def _simulate(num_trajectories, seq_length, rng):
    """Vectorised core: returns states (N, T, 10) float32 and actions (N, T) int64 arrays."""
    n, t = num_trajectories, seq_length
    turns = -(-t // NUM_JOINTS)                                   # turns per joint
    start = rng.integers(0, NUM_LEVELS, size=(n, NUM_JOINTS, 1))
    switch = rng.random((n, NUM_JOINTS, turns - 1)) < SWITCH_PROB
    step = np.where(switch, rng.integers(1, NUM_LEVELS, size=switch.shape), 0)
    levels = (start + np.concatenate([np.zeros_like(start), np.cumsum(step, -1)], -1)) % NUM_LEVELS
    ticks = np.arange(t)
    joint, turn = ticks % NUM_JOINTS, ticks // NUM_JOINTS
    actions = LEVEL_TOKENS[levels[:, joint, turn]]                # (N, T): joint t%7, turn t//7
    # Velocity of every joint at every tick: its last command (zero before its first turn).
    last_turn = (ticks[:, None] - np.arange(NUM_JOINTS)[None, :]) // NUM_JOINTS   # (T, 7)
    held = levels[:, np.arange(NUM_JOINTS)[None, :], np.maximum(last_turn, 0)]    # (N, T, 7)
    velocity = np.where(last_turn >= 0, LEVELS[held], 0.0) * MAX_SPEED
    q0 = Q_HOME + rng.uniform(-0.3, 0.3, size=(n, 1, NUM_JOINTS))
    q = q0 + DT * np.concatenate([np.zeros((n, 1, NUM_JOINTS)), np.cumsum(velocity, 1)[:, :-1]], 1)
    q = np.clip(q, Q_LOW, Q_HIGH)
    states = np.concatenate([q, forward_kinematics_7dof(q)], -1).astype(np.float32)
    return states, actions


def generate_dataset(num_trajectories=10000, seq_length=50, seed=0):
    """Dict with "states" float32 (N, T, 10) = 7 joint angles + end-effector xyz, and
    "actions" int64 (N, T) in 0..255. Deterministic given the seed."""
    states, actions = _simulate(num_trajectories, seq_length, np.random.default_rng(seed))
    return {"states": torch.from_numpy(states), "actions": torch.from_numpy(actions)}


def generate_trajectory(seq_length=50, seed=0):
    """One trajectory: (states (T, 10) float32, actions (T,) int64)."""
    data = generate_dataset(1, seq_length, seed)
    return data["states"][0], data["actions"][0]


def entropy_floor(seq_length=50):
    """Bayes-optimal mean next-token loss (nats) over the seq_length - 1 targets of a window."""
    p = SWITCH_PROB
    steady = -p * math.log(p) - (1 - p) * math.log(1 - p) + p * math.log(NUM_LEVELS - 1)
    targets = np.arange(1, seq_length)
    return float(np.where(targets < NUM_JOINTS, math.log(NUM_LEVELS), steady).mean())


def create_dataloaders(data_path_or_dict, batch_size=32, train_split=0.9, seed=0):
    """(train_loader, val_loader) over (states, actions); train shuffled (seeded), val not."""
    data = data_path_or_dict
    if not isinstance(data, dict):
        with open(data, "rb") as f:
            data = pickle.load(f)
    states, actions = torch.as_tensor(data["states"]), torch.as_tensor(data["actions"])
    num_train = int(len(actions) * train_split)
    train = TensorDataset(states[:num_train], actions[:num_train])
    val = TensorDataset(states[num_train:], actions[num_train:])
    generator = torch.Generator().manual_seed(seed)
    return (DataLoader(train, batch_size=batch_size, shuffle=True, generator=generator),
            DataLoader(val, batch_size=batch_size, shuffle=False))


def main():
    parser = argparse.ArgumentParser(description="Generate synthetic 7-DOF arm trajectories.")
    parser.add_argument("--num_trajectories", type=int, default=10000)
    parser.add_argument("--seq_length", type=int, default=50)
    parser.add_argument("--output", help="default: data/trajectories.pkl for the full dataset, "
                        "data/trajectories_<N>x<T>.pkl for any other size (so a quick experiment "
                        "never overwrites the full dataset)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.output is None:
        full = (args.num_trajectories, args.seq_length) == (10000, 50)
        args.output = ("data/trajectories.pkl" if full else
                       f"data/trajectories_{args.num_trajectories}x{args.seq_length}.pkl")
    data = generate_dataset(args.num_trajectories, args.seq_length, args.seed)
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    with open(args.output, "wb") as f:
        pickle.dump(data, f)
    print(f"wrote {args.output}: states {tuple(data['states'].shape)}, actions "
          f"{tuple(data['actions'].shape)}, seed {args.seed}")
    if args.output != "data/trajectories.pkl":
        print(f"train on it with: python backbone.py --data {args.output}")


if __name__ == "__main__":
    main()
