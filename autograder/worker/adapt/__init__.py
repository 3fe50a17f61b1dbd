"""The one place where the student's API is fitted to the calls the ops make.

Real submissions deviate from the template while behaving correctly: projection layers other
than qkv_proj and out_proj (mapped by shape and role), forward without a `mask` argument or
requiring it, a tuple returned from forward, extra constructor keywords, a model that
returns logits only or (logits, loss, extra), or that shifts the targets itself, a train_epoch
with extra optional arguments that returns a tensor, script code left at module level. Each
function here calls the student's code the template's way first, adapts when the signature or
behaviour says otherwise, and records what it adapted as a note that the grader shows to the
student; what cannot be adapted raises an error marked as the submission not fitting
(fault.does_not_fit) that names the signature the grader expected.

One module per concern:

    calls         calling the student's code: call_submission, forward of attention and model
    construction  building the student's classes the template's way; RMSNorm's gain; dropout
    model_api     how DecoderOnlyTransformer.forward is called and what it returns (ModelAPI)
    projections   the attention's projection layers by shape and role, and loading weights
    projection_roles  which row of those layers computes which q, k, v component, by behaviour
    train_epoch   calling train_epoch and reading the loss it returns
    script_code   importing backbone.py despite script code left at its top level
    decoding      the candidate cached decoding paths of the student's model (mastery)
"""
