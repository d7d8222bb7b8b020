#!/usr/bin/env bash
# Question (issues 48, 49): the shipped natural-image models make x's pixels independent given the latents, so every
# bit of detail the latents do not hold is paid pixel by pixel (the VAE: 4.4361 bits/dim on the 717 official CIFAR-10
# test images; JPEG-XL 3.9050 and WebP 4.3371 code the same pixels from their neighbours). How much does a sub-pixel
# context (selfvae.nn.context: x's 2x2 groups, each conditioned on the groups before it) take off, per CPU-minute,
# started from the shipped weights (its nets start at zero: the same model at step 0)?
#
# Answer so far (2026-11-27, 2-core CPU, one thread a run; docs/RESULTS.md "Sub-pixel context"):
# - the context alone (ctx-frozen, 40 CPU-min): validation 4.5068 -> 4.3180; test 4.4361 -> 4.2486, FID 183.5 -> 176.8
#   (shipped as cifar10-vae-ctx); its codec file 4.2533 bits/dim, below WebP (4.3371). Every weight from the start
#   (ctx-joint, lr 3e-4) went the wrong way first (4.5108 at step 250): stopped.
# - the srVAE's context, reading y too (srvae-frozen, 40 CPU-min): test 4.8496 -> 4.6898, FID 206.8 -> 204.2 (shipped
#   as cifar10-srvae-ctx); its group 3 (three pixels of a block and their mean known) 3.50 -> 3.20, far from <= 2.
# - every weight on from cifar10-vae-ctx at 1e-4 (ctx-on, 27 CPU-min): test 4.2199 but FID 179.1: not shipped.
# - the srVAE's context renormalised onto y (model.consistent: each group on the values its block's average allows):
#   the shipped cifar10-srvae-ctx's weights 4.6898 -> 4.3306 untrained; its context trained so from srvae-on's step
#   1000 (srvae-cons, 60 CPU-min): validation 4.3175 -> 4.2515, test 4.1954, but FID 204.2 -> 212.0: shipped
#   beside it as cifar10-srvae-cons (the best bound; cifar10-srvae-ctx stays, for its samples). The same weights
#   sampled renormalised: FID 216.0, so the renormalisation costs the FID and the training took part of it back.
# - every weight on from there, renormalised (srvae-cons-on, lr 1e-4): validation 4.2515 -> 4.2326 / 4.2253 /
#   4.2198 / 4.2154 / 4.2123 / 4.2101 / 4.2093 at steps 250-1604 (the end, 90 CPU-min): test 4.1551, FID 212.0 ->
#   208.4 (KID 0.1922 -> 0.1873): both better; srvae-cons-on2 on from it (a fresh cosine, 60 CPU-min): validation
#   4.1958, test 4.1421, FID 207.7: shipped as cifar10-srvae-cons (4.1422 float16, IW 4.1029). srvae-cons-fb (the same
#   with free bits 4 nats per channel of z): test 4.1503, units of z active 384 -> 950: not shipped.
#   srvae-cons-on3 (on2's end on, another fresh cosine, 80 CPU-min, 1463 steps): validation 4.1932 / 4.1891 / 4.1859 /
#   4.1832 / 4.1813 / 4.1801 at steps 250-1463, test 4.1267 (float16), FID 206.1 (KID 0.1842): shipped as
#   cifar10-srvae-cons (twenty-second session).
# - ctx-on to its end (step 4188, 90 CPU-min): validation 4.2573, test 4.1892 (experiments/context/ctx-on) but FID
#   178.5 (KID 0.1439) against cifar10-vae-ctx's 176.8 (0.1412): not shipped. On the 4 test photographs of the photos
#   data set (benchmarks/photo_codec.py --split test) it codes 3.172 bits/dim on average, the best of all our models
#   (cifar10-vae-ctx 3.222, photo-vae 3.332, PNG 3.593, WebP 2.730).
# - photographs (photo-frozen): no gain on held-out photographs, -0.035 on training tiles: not shipped.
# - photographs with ctx-on's CIFAR-10 context kept and its latent nets trained on them (photo-ctx, lr 3e-4, stopped at
#   step 750, 15 CPU-min): the 924 test tiles 3.1135 -> 3.0977, the 4 test photographs' files 3.172 -> 3.152 on
#   average (below PNG on all four; WebP 2.730). photo-ctx2 (from it, a mid-24 flow prior fitted: a 7.1 MB file):
#   validation 4.0309 -> 3.9891 at step 2000 but the test tiles 3.2518: the 24 photographs learnt by heart; stopped.
#
# - a context on y_1 too (srvae-cons-y, the y context alone on the shipped weights, 40 CPU-min): test 4.1268 -> 4.1182,
#   FID 206.1 -> 195.2: shipped as cifar10-srvae-cons (twenty-third session). srvae-cons-on4 (every weight, a fresh
#   cosine, 80 CPU-min) 4.1163; the two joined (srvae-cons-on4y, experiments/graft.py + 15 CPU-min) 4.1066.
# - photo-ctx3 (a mid-24 flow fitted to ctx-on's posteriors of photographs, then 15 CPU-min): test tiles 3.1241, files
#   3.183 on average, 7.21 MB: shipped as photo-vae-ctx.
#
#   experiments/context.sh ctx-frozen   # cifar10-vae-small + a context of 64 channels x 3 layers, the context alone
#                                       # trained (train.trainable=x_context), 40 CPU-minutes
#   experiments/context.sh ctx-joint    # the same, every weight trained, 40 CPU-minutes
#   experiments/context.sh photo-frozen # photo-vae + the same context, the context alone trained, 60 CPU-minutes
#   experiments/context.sh srvae-frozen # cifar10-srvae-small + the context, which reads y_K too; the context alone
#                                       # trained, 40 CPU-minutes
#   experiments/context.sh srvae-on     # srvae-frozen's end (shipped as cifar10-srvae-ctx) on, its context alone, a
#                                       # fresh cosine from 3e-4 over 60 CPU-minutes: group 3's arithmetic unlearnt
#   experiments/context.sh srvae-cons   # srvae-on's end, renormalised (model.consistent=true: each group on the values
#                                       # its block's average allows), its context alone, 3e-4 over 60 CPU-minutes
#   experiments/context.sh srvae-cons-on # srvae-cons's end, renormalised, every weight trained at lr 1e-4 (as ctx-on),
#                                       # 90 CPU-minutes
#   experiments/context.sh srvae-cons-on2 # srvae-cons-on's end on, the same settings, a fresh cosine over 60 CPU-min
#   experiments/context.sh srvae-cons-on3 # on2's end (shipped as cifar10-srvae-cons) on, a fresh cosine over 80 min
#   experiments/context.sh srvae-cons-on4 # on3's end (shipped) on, one more fresh cosine over 80 CPU-minutes
#   experiments/context.sh srvae-cons-y # the shipped cifar10-srvae-cons + a context on y_1 (model.y_context_width 64:
#                                       # p(y_1|u)'s 16x16 pixels in 2x2 groups, each on the groups before it), the
#                                       # y context alone trained, 3e-4 over 40 CPU-minutes: how much of y's cost
#                                       # (KL_u + its reconstruction, ~2640 nats of the ~8800) do neighbours take?
#   experiments/context.sh srvae-cons-on4y # on4's end with srvae-cons-y's y context grafted on (experiments/graft.py),
#                                       # the y context alone on at 1e-4 over 15 CPU-minutes: the two gains joined
#   experiments/context.sh srvae-cons-fb  # the same with free bits per channel of z (4 nats a channel, Kingma
#                                       # 2016): do more of z's units carry information, and at what cost in bits?
#   experiments/context.sh photo-ctx    # ctx-on's end on the photographs: the latents' nets learn photographs, the
#                                       # context learnt on CIFAR-10 kept (photo-frozen's learnt their texture), 75 min
#   experiments/context.sh photo-ctx2   # photo-ctx's step 750 with a mid-24 flow prior fitted to its posterior
#                                       # (experiments/refit_prior.py: 3.56M parameters, a 7.1 MB float16 file), the
#                                       # same settings over 75 CPU-minutes: a photo-* model within 8 MB
#   experiments/context.sh photo-ctx3   # the 8 MB photo-* model in one go: ctx-on's end with a mid-24 flow prior
#                                       # fitted to its posteriors of photograph crops (refit_prior.py, 8 CPU-min),
#                                       # then photo-ctx's settings over a cosine of 15 CPU-minutes (photo-ctx's 750
#                                       # steps were its best; longer learns the 24 photographs by heart)
#   experiments/context.sh ctx-on2      # ctx-on's end on (a fresh cosine over 90 CPU-min): the VAE towards 4.00
#   experiments/context.sh vae-gpu-on   # the shipped cifar10-vae-ctx (ctx-on's end + 5.7 minutes on an H200) on, a
#                                       # fresh cosine over 90 CPU-min at 1e-4: the VAE towards 4.00
#   experiments/context.sh vae-gpu-on2  # vae-gpu-on's end on, one more fresh cosine over 90 CPU-min at 1e-4: test
#                                       # 4.1210 -> 4.0973, FID 174.6: shipped as cifar10-vae-ctx (twenty-sixth session)
#   experiments/context.sh vae-gpu-on3  # vae-gpu-on2's end (shipped) on, a third fresh cosine: test 4.0973 -> 4.0708,
#                                       # FID 173.6: shipped as cifar10-vae-ctx (twenty-seventh session)
#   experiments/context.sh vae-gpu-on4  # vae-gpu-on3's end on, a fourth fresh cosine over 90 CPU-min at 1e-4
#   experiments/context.sh vae-gpu-on4b # the same from the same weights with seed 1 (its batches and noise), on the
#                                       # core tests leave idle: does the average of the two runs' weights (a "model
#                                       # soup", Wortsman et al. 2022) beat each, so that both cores train one model?
#   experiments/context.sh srvae-cons-fb2 # the shipped cifar10-srvae-cons (GPU-trained) on with free bits per channel of z
#                                       # (4 nats a channel), a fresh cosine over 90 CPU-min at 1e-4: most of z's units
#                                       # active at no cost in bits/dim? (srvae-cons-fb cost 0.008 from a run's end)
#   experiments/context.sh photo-on      # the shipped photo-vae-ctx on at lr 1e-4 for 25 CPU-min, beside photo-ms: the
#   experiments/context.sh photo-ms      # same with photos-multiscale's crops (384, 544, 768 px): do more scales pay?
#   experiments/context.sh ctx-on       # ctx-frozen's end (shipped as cifar10-vae-ctx) on, every weight trained at
#                                       # lr 1e-4 (ctx-joint's 3e-4 went the wrong way first), 90 CPU-minutes
set -euo pipefail
DATA=${DATA:-../shared/data/cifar10-official-part.npz}
common=(--data-dir "$DATA" --set data.name=cifar10-official-part --threads 1 --channels-last --no-progress
        --steps 1000000 --set train.clock=cpu --set train.lr_schedule=cosine-time --set train.lr_min=2e-5
        --set train.ema_decay=0.999 --set train.eval_limit=245 --set train.sample_every=100000
        --set train.final_iw_limit=0 --set train.batch_size=32 --set train.eval_every=250
        --set train.checkpoint_every=100 --set train.log_every=25)
run() {  # NAME INIT MINUTES EXTRA...: a new run, or --resume where its folder survived; CONFIG=FILE: the model of
  # that config instead of the preset named by NAME (an INIT whose shapes differ from the preset's)
  local out=runs/ctx-$1 init=$2 minutes=$3 preset=cifar10-vae-ctx
  [[ $1 == photo-* ]] && preset=photo-vae-ctx
  [[ $1 == srvae-* ]] && preset=cifar10-srvae-ctx
  [[ $1 == srvae-cons* ]] && preset=cifar10-srvae-cons
  local model=(--preset "$preset")
  [ -n "${CONFIG:-}" ] && model=(--config "$CONFIG")
  shift 3
  if [ -f "$out/last.pt" ]; then
    OMP_NUM_THREADS=1 nohup selfvae train --out "$out" --resume --no-progress >> "$out.log" 2>&1 &
  else
    OMP_NUM_THREADS=1 nohup selfvae train "${model[@]}" --init "$init" --out "$out" "${common[@]}" \
      --set train.max_minutes="$minutes" "$@" > "$out.log" 2>&1 &
  fi
}
from() {  # NAME RUN SHIPPED: where a run that goes on starts: RUN, else (runs/ lost with the machine) the float16
  # weights committed at a session's end (experiments/context/NAME), else the shipped model (the cosine starts again).
  # Superseded folders are pruned, their weights in git history (vae-gpu-on, ctx-on2, srvae-cons-on, srvae-cons-on4,
  # srvae-cons-on4y and srvae-cons-fb2 before commit 2c963f8, vae-gpu-on3 before 863dc3b, vae-gpu-on4 and
  # vae-gpu-on4b (their step-3000 and step-2500 weights) in c9b3a41, vae-gpu-on5's end in fbac622 (shipped in
  # f766636), vae-gpu-on5-lr2's end in e9cf689, vae-gpu-on7-lr3's end shipped in the thirty-first session,
  # vae-gpu-on9's step 1700 in 1a2c7c5, vae-gpu-on9-lr4's end shipped in the thirty-second, vae-gpu-on10-lr5's step
  # 1000 in f393ad9 and its end shipped in the thirty-third, vae-gpu-on10's end in 5db09dd, vae-gpu-on11's end shipped
  # in a2dae5a, vae-gpu-on11-lr6's end shipped in the thirty-fourth); those that became a shipped model fall back to
  # it, which holds the same weights
  if [ -d "$2" ]; then echo "$2"; elif [ -d "experiments/context/$1" ]; then echo "experiments/context/$1"; else echo "$3"; fi
}
# the photographs' runs: the latent nets q(u|x), p(u), p(x|u) on the photos data set, the context kept
photos=(--data-dir /usr/share --set data.name=photos --set train.lr=3e-4 --set train.lr_warmup_steps=50
        --set train.trainable=q_u,p_u,p_y)
refit_then_run() {  # NAME INIT SOURCE MINUTES: SOURCE with a mid-24 flow prior fitted to its posteriors of photograph
  # crops (experiments/refit_prior.py, written to INIT once), then a photographs' run from it
  [ -d "$2" ] || python experiments/refit_prior.py "$3" --out "$2" --data-dir /usr/share --data photos \
    --mid-channels 24 --minutes 8
  CONFIG=$2/config.json run "$1" "$2" "$4" "${photos[@]}"
}
vae_restart() {  # NAME PREVIOUS EXTRA...: the VAE on from PREVIOUS's end (its run, its committed weights, else the
  # shipped cifar10-vae-ctx), every weight on a fresh cosine from 1e-4 over 90 CPU-minutes (MINUTES=N: over N; a peak
  # given in EXTRA as --set train.lr=... comes later and overrides it)
  run "$1" "$(from "$2" "runs/ctx-$2" cifar10-vae-ctx)" "${MINUTES:-90}" --set train.lr=1e-4 \
    --set train.lr_warmup_steps=50 "${@:3}"
}
case ${1:?ctx-frozen | ctx-joint | ctx-on | photo-frozen | srvae-frozen | srvae-on | srvae-cons | srvae-cons-on | srvae-cons-on2 | srvae-cons-on3 | srvae-cons-on4 | srvae-cons-y | srvae-cons-on4y | srvae-cons-fb | photo-ctx | photo-ctx2 | photo-ctx3 | ctx-on2 | vae-gpu-on | vae-gpu-on2 | vae-gpu-on3 | vae-gpu-on4 | vae-gpu-on4b | vae-gpu-on5 | vae-gpu-on6 | vae-gpu-on7 | vae-gpu-on7-lr3 | vae-gpu-on8 | vae-gpu-on5-lr2 | vae-gpu-on9 | vae-gpu-on9-lr4 | vae-gpu-on10 | vae-gpu-on10-lr5 | vae-gpu-on11 | vae-gpu-on11-lr6 | vae-gpu-on12 | vae-gpu-on12-long | photo-ctx4 | photo-ctx5 | photo-ctx6 | photo-ctx7 | vae-q3 | vae-q10 | vae-r16 | vae-r32 | srvae-cons-fb2 | photo-on | photo-ms} in
  ctx-frozen) run frozen cifar10-vae-small 40 --set train.lr=3e-4 --set train.lr_warmup_steps=100 \
                --set train.trainable=x_context ;;
  ctx-joint) run joint cifar10-vae-small 40 --set train.lr=3e-4 --set train.lr_warmup_steps=100 ;;
  photo-frozen) run photo-frozen photo-vae 60 --data-dir /usr/share --set data.name=photos --set train.lr=3e-4 \
                  --set train.lr_warmup_steps=100 --set train.trainable=x_context ;;
  srvae-frozen) run srvae-frozen cifar10-srvae-small 40 --set train.lr=3e-4 --set train.lr_warmup_steps=100 \
                  --set train.trainable=x_context --set model.consistent=false ;;
  srvae-on) run srvae-on "$(from srvae-on runs/ctx-srvae-frozen cifar10-srvae-ctx)" 60 --set train.lr=3e-4 --set train.lr_warmup_steps=50 \
              --set train.trainable=x_context --set model.consistent=false ;;
  srvae-cons) run srvae-cons "$(from srvae-on runs/ctx-srvae-on cifar10-srvae-ctx)" 60 --set model.consistent=true \
                --set train.lr=3e-4 --set train.lr_warmup_steps=50 --set train.trainable=x_context ;;
  srvae-cons-on) run srvae-cons-on "$(from srvae-cons-on runs/ctx-srvae-cons cifar10-srvae-cons)" 90 \
                   --set model.consistent=true --set train.lr=1e-4 --set train.lr_warmup_steps=50 ;;
  srvae-cons-on2) run srvae-cons-on2 "$(from srvae-cons-on runs/ctx-srvae-cons-on cifar10-srvae-cons)" 60 \
                    --set model.consistent=true --set train.lr=1e-4 --set train.lr_warmup_steps=50 ;;
  srvae-cons-on3) run srvae-cons-on3 "$(from srvae-cons-on2 runs/ctx-srvae-cons-on2 cifar10-srvae-cons)" 80 \
                    --set model.consistent=true --set train.lr=1e-4 --set train.lr_warmup_steps=50 ;;
  srvae-cons-on4) run srvae-cons-on4 "$(from srvae-cons-on4 runs/ctx-srvae-cons-on3 cifar10-srvae-cons)" 80 \
                    --set model.consistent=true --set train.lr=1e-4 --set train.lr_warmup_steps=50 ;;
  srvae-cons-y) run srvae-cons-y cifar10-srvae-cons 40 --set model.consistent=true --set model.y_context_width=64 \
                  --set train.lr=3e-4 --set train.lr_warmup_steps=100 --set train.trainable=y_context ;;
  srvae-cons-on4y)
    init=$(from srvae-cons-on4y runs/srvae-cons-on4y-graft runs/srvae-cons-on4y-graft)  # the graft, else its end
    [ -d "$init" ] || python experiments/graft.py "$(from srvae-cons-on4 runs/ctx-srvae-cons-on4 cifar10-srvae-cons)" \
      "$(from srvae-cons-y runs/ctx-srvae-cons-y cifar10-srvae-cons)" --part y_context --out "$init"
    CONFIG=$init/config.json run srvae-cons-on4y "$init" 15 --set model.consistent=true --set train.lr=1e-4 \
      --set train.lr_warmup_steps=50 --set train.trainable=y_context ;;
  srvae-cons-fb) run srvae-cons-fb "$(from srvae-cons-on runs/ctx-srvae-cons-on cifar10-srvae-cons)" 60 \
                   --set model.consistent=true --set train.lr=1e-4 --set train.lr_warmup_steps=50 \
                   --set train.free_bits=4 --set train.free_bits_per=channel ;;
  srvae-cons-fb2) CONFIG=$(from srvae-cons-fb2 runs/ctx-srvae-cons-fb2 src/selfvae/pretrained/cifar10-srvae-cons)/config.json \
                    run srvae-cons-fb2 "$(from srvae-cons-fb2 runs/ctx-srvae-cons-fb2 cifar10-srvae-cons)" 90 \
                    --set model.consistent=true --set train.lr=1e-4 --set train.lr_warmup_steps=50 \
                    --set train.free_bits=4 --set train.free_bits_per=channel ;;
  photo-on|photo-ms) # the shipped photo-vae-ctx on, every weight, lr 1e-4 on a cosine over 25 CPU-minutes: the
    # photographs' crops at their one scale (photo-on) or at three (photo-ms: photos-multiscale), the same settings
    CONFIG=$(from "$1" "runs/ctx-$1" src/selfvae/pretrained/photo-vae-ctx)/config.json \
      run "$1" "$(from "$1" "runs/ctx-$1" photo-vae-ctx)" 25 --data-dir /usr/share \
      --set data.name="$([ "$1" = photo-ms ] && echo photos-multiscale || echo photos)" --set train.lr=1e-4 \
      --set train.lr_warmup_steps=50 --set train.trainable=null ;;
  photo-ctx) run photo-ctx "$(from ctx-on experiments/context/ctx-on cifar10-vae-ctx)" 75 "${photos[@]}" ;;
  photo-ctx2) refit_then_run photo-ctx2 runs/photo-ctx-mid24 "$(from photo-ctx runs/ctx-photo-ctx cifar10-vae-ctx)" 75 ;;
  photo-ctx3) refit_then_run photo-ctx3 runs/photo-ctx3-mid24 "$(from ctx-on experiments/context/ctx-on cifar10-vae-ctx)" 15 ;;
  photo-ctx4) # photo-ctx3's recipe from the VAE 0.19 bits/dim better on CIFAR-10 than ctx-on (vae-gpu-on7-lr3's end,
    # shipped as cifar10-vae-ctx in the thirty-first session), its latent nets trained 45 CPU-minutes instead of 15
    refit_then_run photo-ctx4 runs/photo-ctx4-mid24 "$(from vae-gpu-on7-lr3 runs/ctx-vae-gpu-on7-lr3 cifar10-vae-ctx)" 45 ;;
  photo-ctx5) # the same from vae-gpu-on9's end (the ninth CIFAR-10 restart): the photograph files now move with the
    # CIFAR-10 training underneath about as much as with a photograph fine-tune
    refit_then_run photo-ctx5 runs/photo-ctx5-mid24 "$(from vae-gpu-on9 runs/ctx-vae-gpu-on9 cifar10-vae-ctx)" 45 ;;
  photo-ctx6) # the same from vae-gpu-on10's end (the tenth restart's 4e-4 arm, the first to end)
    refit_then_run photo-ctx6 runs/photo-ctx6-mid24 "$(from vae-gpu-on10 runs/ctx-vae-gpu-on10 cifar10-vae-ctx)" 45 ;;
  photo-ctx7) # the same from vae-gpu-on11's end (the eleventh restart's 5e-4 arm, the first to end)
    refit_then_run photo-ctx7 runs/photo-ctx7-mid24 "$(from vae-gpu-on11 runs/ctx-vae-gpu-on11 cifar10-vae-ctx)" 45 ;;
  ctx-on2) run on2 "$(from ctx-on2 runs/ctx-on experiments/context/ctx-on)" 90 --set train.lr=1e-4 \
             --set train.lr_warmup_steps=50 ;;
  vae-gpu-on) run vae-gpu-on "$(from vae-gpu-on runs/ctx-vae-gpu-on cifar10-vae-ctx)" 90 --set train.lr=1e-4 \
                --set train.lr_warmup_steps=50 ;;
  vae-gpu-on2) vae_restart vae-gpu-on2 vae-gpu-on ;;
  vae-gpu-on3) vae_restart vae-gpu-on3 vae-gpu-on2 ;;
  vae-gpu-on4) vae_restart vae-gpu-on4 vae-gpu-on3 ;;
  vae-gpu-on4b) vae_restart vae-gpu-on4b vae-gpu-on3 --set train.seed=1 ;;
  vae-gpu-on5) vae_restart vae-gpu-on5 vae-gpu-on4b ;;
  vae-gpu-on6) vae_restart vae-gpu-on6 vae-gpu-on5 ;;
  vae-gpu-on7) vae_restart vae-gpu-on7 vae-gpu-on6 --set train.lr=2e-4 ;;  # vae-gpu-on5-lr2's peak lr paid 0.005
  vae-gpu-on7-lr3) vae_restart vae-gpu-on7-lr3 vae-gpu-on6 --set train.lr=3e-4 ;;  # on7 with a peak of 3e-4
  vae-gpu-on8) vae_restart vae-gpu-on8 vae-gpu-on7-lr3 --set train.lr=3e-4 ;;  # on7-lr3 beat on7: test 3.9928 vs 3.9990
  vae-gpu-on9) vae_restart vae-gpu-on9 vae-gpu-on8 --set train.lr=3e-4 ;;  # on8 (3e-4) gained 0.036 on test
  vae-gpu-on9-lr4) vae_restart vae-gpu-on9-lr4 vae-gpu-on8 --set train.lr=4e-4 ;;  # on9 with a peak of 4e-4
  vae-gpu-on10) vae_restart vae-gpu-on10 vae-gpu-on9-lr4 --set train.lr=4e-4 ;;  # on9-lr4 beat on9 by 0.006 on test
  vae-gpu-on10-lr5) vae_restart vae-gpu-on10-lr5 vae-gpu-on9-lr4 --set train.lr=5e-4 ;;  # on10 with a peak of 5e-4
  vae-gpu-on11) vae_restart vae-gpu-on11 vae-gpu-on10-lr5 --set train.lr=5e-4 ;;  # on10-lr5 ahead of on10 from step 2750
  vae-gpu-on11-lr6) vae_restart vae-gpu-on11-lr6 vae-gpu-on10-lr5 --set train.lr=6e-4 ;;  # on11 with a peak of 6e-4
  vae-gpu-on12) vae_restart vae-gpu-on12 vae-gpu-on11 --set train.lr=5e-4 ;;  # the twelfth restart from on11's end
  vae-gpu-on12-long) # one cosine over 180 CPU-minutes instead of two restarts of 90: does the restart cost more than it
    # gives? (its budget is CPU time: it goes on across sessions by --resume)
    MINUTES=180 vae_restart vae-gpu-on12-long vae-gpu-on11 --set train.lr=5e-4 ;;
  vae-gpu-on5-lr2) vae_restart vae-gpu-on5-lr2 vae-gpu-on4b --set train.lr=2e-4 ;;  # on5 with twice its peak lr
  vae-q3|vae-q10) # the encoder q(u|x) alone trained on from vae-gpu-on4b's end (the rest fixed), a cosine from
    # 3e-4 (q3) or 1e-3 (q10) over 20 CPU-minutes: an encoder optimised per image took 0.050 bits/dim off its bound
    # (`selfvae eval --refine 150`), more than 64 importance samples did (0.024)
    run "$1" "$(from vae-gpu-on4b runs/ctx-vae-gpu-on4b cifar10-vae-ctx)" 20 --set train.trainable=q_u \
      --set train.lr="$([ "$1" = vae-q3 ] && echo 3e-4 || echo 1e-3)" --set train.lr_warmup_steps=50 ;;
  vae-r16|vae-r32) # the same from vae-gpu-on4b's end with a residual encoder added (model.q_u_residual: width 32,
    # growth 16 or 32, a transition; its last layer at zero), q_u and it alone trained, 3e-4 over 20 CPU-minutes
    run "$1" "$(from vae-gpu-on4b runs/ctx-vae-gpu-on4b cifar10-vae-ctx)" 20 --set train.trainable=q_u \
      --set model.q_u_residual.width=32 --set model.q_u_residual.growth="${1#vae-r}" \
      --set model.q_u_residual.transition=true --set train.lr=3e-4 --set train.lr_warmup_steps=50 ;;
  ctx-on) run on "$(from ctx-on runs/ctx-frozen cifar10-vae-ctx)" 90 --set train.lr=1e-4 --set train.lr_warmup_steps=50 ;;
esac
