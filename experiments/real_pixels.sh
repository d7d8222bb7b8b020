#!/usr/bin/env bash
# Question (issue 49): the natural-image models were trained on a JPEG copy of CIFAR-10 and code the official pixels
# at 5.13 (VAE) / 5.61 (srVAE) bits/dim. What learns real pixels best per CPU-hour on the 4745 official training
# images of ../shared/data/cifar10-official-part.npz, and can the srVAE's z (KL 0.02 nats, 0 of 1024 units active)
# be made to carry information?
#
# Answer so far (2026-11-26, 2-core CPU, one thread a run; docs/RESULTS.md "Real pixels"):
# - Fine-tuning the shipped JPEG-trained weights on the official images (the authors' flips and whole-pixel shifts,
#   EMA, cosine over the CPU clock) pays at once: the VAE's validation ELBO 5.13 -> 4.73 in 250 steps (7 CPU-min),
#   4.66 at 1250 steps (34 CPU-min), 4.6128 at 82 CPU-min as the rate annealed; shipped: test ELBO 4.5646 on
#   the 717 official test images (was 5.1312). The srVAE (fb100's 200 steps, then 775 without free bits, 60
#   CPU-min in all): 4.9915, 4.7117 renormalised (was 5.6061 / 5.3359). Training from scratch on 4745 images
#   stands at 6.7 after 100 steps (srVAE): far behind the fine-tune at any budget this session could give.
# - The srVAE's z collapses in the first 100 steps from scratch (KL_z 5.8 -> 1.9 nats, 0 of 1024 units active at
#   the first validation; u: 998 active). From the collapsed shipped weights, neither remedy that is a setting
#   revives it: free bits (100 nats) buys 57 nats of KL that carry nothing (the posterior mean moved by the same
#   offset for every image: 0 active units, variance over images 6e-5 of the posterior's); KL warm-up (400 steps)
#   leaves KL_z at 0.0 at beta = 0.25. The decoder does respond to z (noise of std 1 on z: +10 nats of re_x;
#   std 10: +1760), so z is ignored by choice of the encoder, not cut off.
# - Our copy of the authors' nets trained as their code trains them (ours-paper-z, 60 CPU-min, 239 steps) loses z
#   as theirs does (0 of 1024 units active at every validation; theirs: 0 but one transient bump at step 100).
# - From random weights (30 CPU-min each, docs/RESULTS.md "Remedies from random weights"): KL warm-up keeps z
#   active while beta < 1 (827 units at step 50) and loses it within 150 steps after (test 5.6161 vs 5.5893 without);
#   free bits (32 nats) the same, sooner (0 active from step 300; test 5.7191);
# - vae-ft2 (95 CPU-min from the H200's weights, lr 3e-4): validation 4.5516 -> 4.5228, test 4.5017 -> 4.4741 (shipped).
# - On an H200 (5.4 min, batch 32) z revives in the authors' nets, theirs and ours alike, between steps 250 and 500
#   (ours: KL_z 137 nats, 827 of 1024 units active at step 979); z-small-authors (the small nets trained the same
#   way, 2937 steps, 95 CPU-min) kept 0 units active to the end: the small preset's z path is what loses it.
# - the 2-level selfVAE is 0.18 bits/dim behind the srVAE at equal steps (5.7656), both its z levels collapsed.
# - Trained the authors' way from random weights (experiments/z_candidates.py, docs/RESULTS.md "Designs around z"):
#   z revives with the authors' z side (q_z, p_z, p_x) at full size or at half its growth, whatever the u side
#   (z-paper-zside: 549 informative units of 1024 at step 400; z-paper-half, 5.1M: 875 at step 500, KL_z 52.6 nats),
#   and not at the small preset's sizes, in our layers or theirs (z-small-dec, z-paper-small: 0 informative units).
# - The third H200 (2026-11-27, 5 min): p(x|y,z) is the net that must be wide (z-paper-px revived z by step 750,
#   z-paper-pz and z-paper-small never did); z-paper-ship (3.76M, ships) revived it fastest: test 5.5462, KL_z 217
#   nats, 320 informative units; it goes on from those weights (z-ship-on). The shipped models gained again from
#   5 GPU-minutes: VAE 4.4539 -> 4.4361, srVAE 4.9310 -> 4.9201 (z still unused), photo-vae 3.2859 -> 3.2799.
# - z-paper-ship's p(z|y,u) ignores u, so its live z side joined the shipped srVAE's u side (experiments/z_hybrid.py,
#   a mid-14 flow fitted for 8 MB): 4.9253 on 245 test images at once; after 1000 steps of z-hybrid-on (48 CPU-min)
#   shipped as cifar10-srvae-small: test 4.9201 -> 4.9062, FID 217.3 -> 213.9, KL_z 0.03 -> 305 nats, 564 units active;
#   at the end of its 150 CPU-minutes (2992 steps; eighteenth session) shipped again: 4.8496, FID 206.8, KL_z 370.
# - z-hybrid-on2 (1134 steps more, lr 2e-4), then free bits per channel of z (z-hybrid-fb, 2 nats a channel): its step
#   500 shipped (4.8241, FID 204.6, 991 of 1024 units active); its end (1239 steps, 60 CPU-min; twenty-second session)
#   shipped again: test 4.8173 (float16), FID 203.9 (KID 0.1816), KL_z 422 nats, every one of z's 1024 units active.
#
#   experiments/real_pixels.sh vae-ft          # the VAE from the shipped weights (150 CPU-minutes; resumable)
#   experiments/real_pixels.sh vae-ft2         # the VAE on from the H200's weights, 95 CPU-min at lr 3e-4 (shipped)
#   experiments/real_pixels.sh vae-ft3         # the VAE on from the second H200's weights, 120 CPU-min at lr 3e-4
#   experiments/real_pixels.sh vae-ft4         # the VAE on from the third H200's weights (shipped 2026-11-27), lr 2e-4
#   experiments/real_pixels.sh srvae-fb100     # srVAE from the shipped weights, free bits 100 on z (the 57 nats)
#   experiments/real_pixels.sh srvae-warm      # srVAE from the shipped weights, KL warm-up over 400 steps
#   experiments/real_pixels.sh srvae-scratch   # srVAE from random weights: when does z collapse?
#   experiments/real_pixels.sh srvae-ft        # srVAE from srvae-fb100's weights, free bits off (shipped)
#   experiments/real_pixels.sh ours-paper-z    # our cifar10-srvae-paper (the authors' nets exactly) from scratch as
#                                              # experiments/authors_z.py trains theirs: AdaMax 2e-3, exp schedule,
#                                              # batch 32, no clipping, no EMA, 60 CPU-minutes; KL_z and active units
#   experiments/real_pixels.sh z-base          # srVAE from random weights, 30 CPU-minutes (the z remedies' baseline)
#   experiments/real_pixels.sh z-warm          # the same with KL warm-up over its first 250 steps: does z, free to
#                                              # carry information while beta is small, keep it at beta = 1?
#   experiments/real_pixels.sh z-fb            # the same with free bits of 32 nats on z from the first step
#   experiments/real_pixels.sh z-small-authors # srvae-small from random weights trained as the authors train theirs
#                                              # (batch 32, no clipping, no EMA, AdaMax 2e-3): on an H200 their nets
#                                              # revived z between steps 250 and 500; do the small nets, on a CPU?
#   experiments/real_pixels.sh z-small-wide    # z-small-authors with q(z|x) as wide as the authors' (growth 16, 4
#                                              # steps): is the encoder's width what keeps z collapsed?
#   experiments/real_pixels.sh z-small-dec     # the designs of experiments/z_candidates.py (each from random weights,
#   experiments/real_pixels.sh z-paper-small   # trained as the authors train theirs; z-paper-zside 150 CPU-minutes,
#   experiments/real_pixels.sh z-paper-half    # the others 40): which keeps z carrying information at a size that
#   experiments/real_pixels.sh z-paper-zside   # ships? (also z-paper-px, z-paper-pz, z-paper-ship)
#   experiments/real_pixels.sh z-ship-on       # z-paper-ship on from its committed weights (z_candidates.GO_ON: the
#                                              # 3rd H200's 1250 steps, KL_z 217 nats, test 5.546, then 2000 CPU
#                                              # steps, validation 5.553 -> 5.273), batch 32 without clipping,
#                                              # EMA and a cosine from 1e-3 over 150 CPU-min: towards a shipped srVAE
#                                              # whose z carries information
#   experiments/real_pixels.sh z-ship-on2      # the same from its weights at CPU step 2100 (committed at the end of
#                                              # z-ship-on, whose lr had annealed to 2e-4): a cosine from 5e-4 over
#                                              # 170 CPU-min
#   experiments/real_pixels.sh z-hybrid-on     # the joined srVAE of experiments/z_hybrid.py (the shipped srVAE's u
#                                              # side, z-paper-ship's live z side, a flow prior fitted to fit 8 MB)
#                                              # on the official pixels as z-ship-on2 trains, lr 4e-4, 150 CPU-min
#   experiments/real_pixels.sh z-hybrid-on2    # the srVAE on from its shipped weights (z-hybrid-on's end) as z-hybrid-on
#                                              # trains, lr 2e-4, 150 CPU-min
#   experiments/real_pixels.sh z-hybrid-fb     # z-hybrid-on2's weights on as it trains, with free bits per channel
#                                              # of z (2 nats a channel; srvae-cons-fb of experiments/context.sh,
#                                              # 4 nats, cost 0.006 bits/dim): most of z's units used, at what cost?
#                                              # Validation 4.9046 / 4.9005 at steps 250 / 500, units active 757 /
#                                              # 992: its step 500 shipped as cifar10-srvae-small (test 4.8241)
#   experiments/real_pixels.sh photo-on        # photo-vae (issue 48) on from the shipped weights on the photographs'
#                                              # crops, lr 2e-4 (the rate that worked on the H200), 90 CPU-min
#   experiments/real_pixels.sh lvl2-base       # the 2-level selfVAE (32->16->8) as z-base: does the level pay?
#   experiments/real_pixels.sh ship            # stop all, measure and ship runs/real-{vae,srvae}-ft
set -euo pipefail
DATA=${DATA:-../shared/data/cifar10-official-part.npz}
common=(--data-dir "$DATA" --set data.name=cifar10-official-part --threads 1 --channels-last --no-progress
        --steps 1000000 --set train.clock=cpu --set train.lr_schedule=cosine-time --set train.lr_min=2e-5
        --set train.ema_decay=0.999 --set train.eval_limit=null --set train.sample_every=100000
        --set train.final_iw_limit=0)
run() {  # NAME PRESET INIT MINUTES EXTRA...: a new run, or --resume where its folder survived
  local out=runs/real-$1 preset=$2 init=$3 minutes=$4
  shift 4
  if [ -f "$out/last.pt" ]; then
    OMP_NUM_THREADS=1 nohup selfvae train --out "$out" --resume --no-progress >> "$out.log" 2>&1 &
  else
    local from=()
    [ "$init" != none ] && from=(--init "$init")
    OMP_NUM_THREADS=1 nohup selfvae train --preset "$preset" "${from[@]}" --out "$out" "${common[@]}" \
      --set train.max_minutes="$minutes" "$@" > "$out.log" 2>&1 &
  fi
}
case ${1:?vae-ft | vae-ft2 | vae-ft3 | vae-ft4 | srvae-fb100 | srvae-warm | srvae-scratch | srvae-ft | ours-paper-z | z-base | z-warm | z-fb | z-small-authors | z-small-wide | z-small-dec | z-paper-small | z-paper-half | z-paper-zside | z-paper-px | z-paper-pz | z-paper-ship | z-ship-on | z-ship-on2 | z-hybrid-on | z-hybrid-on2 | z-hybrid-fb | photo-on | lvl2-base | ship} in
  vae-ft) run vae-ft cifar10-vae-small cifar10-vae-small 150 --set train.lr=5e-4 --set train.lr_warmup_steps=100 \
            --set train.eval_every=250 ;;
  vae-ft2) run vae-ft2 cifar10-vae-small cifar10-vae-small 95 --set train.lr=3e-4 --set train.lr_warmup_steps=100 \
             --set train.eval_every=250 ;;
  vae-ft3) run vae-ft3 cifar10-vae-small cifar10-vae-small 120 --set train.lr=3e-4 --set train.lr_warmup_steps=100 \
             --set train.eval_every=250 ;;
  vae-ft4) run vae-ft4 cifar10-vae-small cifar10-vae-small 120 --set train.lr=2e-4 --set train.lr_warmup_steps=100 \
             --set train.eval_every=250 ;;
  srvae-fb100) run srvae-ft-fb100 cifar10-srvae-small cifar10-srvae-small 120 --set train.lr=5e-4 \
                 --set train.lr_warmup_steps=50 --set train.free_bits=100 --set train.eval_every=100 ;;
  srvae-warm) run srvae-ft-warm cifar10-srvae-small cifar10-srvae-small 100 --set train.lr=5e-4 \
                --set train.lr_warmup_steps=50 --set train.kl_warmup_steps=400 --set train.eval_every=100 ;;
  srvae-scratch) run srvae-scratch cifar10-srvae-small none 240 --set train.lr_schedule=exp \
                   --set train.eval_every=100 --set train.checkpoint_every=100 ;;
  srvae-ft) run srvae-ft cifar10-srvae-small runs/real-srvae-ft-fb100 45 --set train.lr=4e-4 \
              --set train.lr_warmup_steps=20 --set train.eval_every=100 ;;
  z-base) run z-base cifar10-srvae-small none 30 --set train.lr_schedule=exp --set train.eval_every=50 \
            --set train.eval_limit=245 --set train.checkpoint_every=50 ;;
  z-warm) run z-warm cifar10-srvae-small none 30 --set train.lr_schedule=exp --set train.eval_every=50 \
            --set train.eval_limit=245 --set train.checkpoint_every=50 --set train.kl_warmup_steps=250 ;;
  z-fb) run z-fb cifar10-srvae-small none 30 --set train.lr_schedule=exp --set train.eval_every=50 \
          --set train.eval_limit=245 --set train.checkpoint_every=50 --set train.free_bits=32 ;;
  z-small-authors) run z-small-authors cifar10-srvae-small none 120 --set train.batch_size=32 \
                    --set train.grad_clip=null --set train.ema_decay=null --set train.lr_schedule=exp \
                    --set train.eval_every=100 --set train.eval_limit=245 --set train.checkpoint_every=100 ;;
  z-small-wide) run z-small-wide cifar10-srvae-small none 40 --set train.batch_size=32 \
                 --set train.grad_clip=null --set train.ema_decay=null --set train.lr_schedule=exp \
                 --set train.eval_every=100 --set train.eval_limit=245 --set train.checkpoint_every=100 \
                 --set model.q_z.width=32 --set model.q_z.growth=16 --set model.q_z.steps=4 ;;
  z-small-dec | z-paper-small | z-paper-half | z-paper-zside | z-paper-px | z-paper-pz | z-paper-ship)
    read -ra design <<< "$(python experiments/z_candidates.py "$1")"  # --preset P --set ...
    minutes=40; [ "$1" = z-paper-zside ] && minutes=150
    run "$1" "${design[1]}" none "$minutes" "${design[@]:2}" --set train.eval_every=100 --set train.eval_limit=245 \
      --set train.checkpoint_every=100 --set train.log_every=25 ;;
  z-ship-on)
    read -ra design <<< "$(python experiments/z_candidates.py z-paper-ship --go-on)"  # --init its committed weights
    run z-ship-on "${design[1]}" none 150 "${design[@]:2}" --set train.eval_every=250 --set train.eval_limit=245 \
      --set train.checkpoint_every=100 --set train.log_every=25 ;;
  z-ship-on2)
    read -ra design <<< "$(python experiments/z_candidates.py z-paper-ship --go-on)"
    run z-ship-on2 "${design[1]}" none 170 "${design[@]:2}" --set train.lr=5e-4 --set train.lr_warmup_steps=50 \
      --set train.eval_every=250 --set train.eval_limit=245 --set train.checkpoint_every=100 --set train.log_every=25 ;;
  z-hybrid-on)
    out=runs/real-z-hybrid-on
    if [ -f "$out/last.pt" ]; then
      OMP_NUM_THREADS=1 nohup selfvae train --out "$out" --resume --no-progress >> "$out.log" 2>&1 &
    else
      OMP_NUM_THREADS=1 nohup selfvae train --config experiments/real_pixels/z-hybrid/config.json \
        --init experiments/real_pixels/z-hybrid --out "$out" "${common[@]}" --set train.max_minutes=150 \
        --set train.batch_size=32 --set train.grad_clip=null --set train.lr=4e-4 --set train.lr_warmup_steps=50 \
        --set train.eval_every=250 --set train.eval_limit=245 --set train.workers=0 \
        --set train.checkpoint_every=100 --set train.log_every=25 > "$out.log" 2>&1 &
    fi ;;
  z-hybrid-on2)  # from its committed float16 weights where a lost machine took runs/ (the cosine starts again)
    from=cifar10-srvae-small; [ -d experiments/real_pixels/z-hybrid-on2 ] && from=experiments/real_pixels/z-hybrid-on2
    run z-hybrid-on2 cifar10-srvae-small "$from" 150 --set train.batch_size=32 \
                  --set train.grad_clip=null --set train.lr=2e-4 --set train.lr_warmup_steps=50 --set train.eval_every=250 \
                  --set train.eval_limit=245 --set train.workers=0 --set train.checkpoint_every=100 --set train.log_every=25 ;;
  z-hybrid-fb)  # where runs/ is lost: from its float16 weights committed at a session's end, else the shipped model
    from=cifar10-srvae-small; [ -d experiments/real_pixels/z-hybrid-fb ] && from=experiments/real_pixels/z-hybrid-fb
    run z-hybrid-fb cifar10-srvae-small "$from" 60 --set train.batch_size=32 --set train.grad_clip=null \
                  --set train.lr=2e-4 --set train.lr_warmup_steps=50 --set train.eval_every=250 --set train.eval_limit=245 \
                  --set train.workers=0 --set train.checkpoint_every=100 --set train.log_every=25 \
                  --set train.free_bits=2 --set train.free_bits_per=channel ;;
  photo-on) run photo-on photo-vae photo-vae 90 --data-dir /usr/share --set data.name=photos --set train.lr=2e-4 \
              --set train.lr_warmup_steps=50 --set train.eval_every=250 ;;
  lvl2-base) run lvl2-base cifar10-2lvl-small none 30 --set train.lr_schedule=exp --set train.eval_every=50 \
               --set train.eval_limit=245 --set train.checkpoint_every=50 ;;
  ours-paper-z)
    out=runs/ours-srvae-paper-z
    if [ -f "$out/last.pt" ]; then
      OMP_NUM_THREADS=1 nohup selfvae train --out "$out" --resume --no-progress >> "$out.log" 2>&1 &
    else
      OMP_NUM_THREADS=1 nohup selfvae train --preset cifar10-srvae-paper --out "$out" --data-dir "$DATA" \
        --set data.name=cifar10-official-part --threads 1 --channels-last --no-progress --set train.clock=cpu \
        --set train.max_minutes=60 --set train.grad_clip=null --set train.log_every=5 --set train.eval_every=25 \
        --set train.eval_limit=245 --set train.checkpoint_every=25 --set train.final_iw_limit=0 > "$out.log" 2>&1 &
    fi ;;
  ship)
    pkill -TERM -f -- "--out runs/real-" || true
    sleep 30
    note="the official CIFAR-10 pixels, a part (cifar10-official-part: 4745 training images, 717 test images; \
a tenth of CIFAR-10, so bits/dim are on its 717 test images, not the papers' 10000), fine-tuned from weights \
trained on the JPEG copy (cifar10-jpeg)"
    for m in vae srvae; do
      python scripts/train_pretrained.py "cifar10-$m-small" --ship-only --run "runs/real-$m-ft" --data-note "$note"
    done ;;
esac
