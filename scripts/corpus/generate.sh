#!/usr/bin/env bash
# Regenerates the turn-taking test corpus (issue 14) into crates/nixflex-testkit/corpus/:
# clean speech clips from espeak-ng voices, as 8 kHz mono 16-bit PCM WAV band-limited like a
# phone line (sox: 300-3400 Hz), trimmed to at most 20 ms of leading/trailing silence and
# normalised so each clip's *active speech* RMS is -20 dBFS, plus manifest.tsv.
#
# Needs espeak-ng, sox and python3 (standard library only). Nothing at run time needs them: the
# WAV files are committed and read by nixflex-testkit::corpus through include_bytes!.
# The output is deterministic for a given espeak-ng/sox version (no dither, no random input).
#
# Usage: scripts/corpus/generate.sh   (from anywhere; overwrites the corpus folder)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="$root/crates/nixflex-testkit/corpus"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

for tool in espeak-ng sox python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y espeak-ng sox)" >&2; exit 1; }
done

# voice id in the file names, espeak-ng voice, words-per-minute, pitch (0-99)
voices=(
  "usm:en-us:165:45"
  "gbm:en-gb-x-rp+m3:160:40"
  "usf:en-us+f3:170:55"
  "gbf:en-gb+f4:160:60"
)

# name|kind|text (a "|" inside the text of a paused clip separates the parts joined by 500 ms of zeros)
clips=(
  "appointment|sentence|I'd like to book an appointment for next Tuesday."
  "premium|sentence|Can you tell me how much the premium plan costs?"
  "account|sentence|My account number is four five six seven."
  "address|paused|I need to change my address...|it is twelve Oak Street."
  "wait|interruption|Wait, stop, that's wrong."
  "mmhm|backchannel|mm-hm"
  "yeah|backchannel|yeah"
  "okay|backchannel|okay"
  "right|backchannel|right"
  "uhhuh|backchannel|uh-huh"
)

# What espeak-ng is asked to say for texts it would otherwise spell out or mispronounce.
spoken() {
  case "$1" in
    mm-hm) echo "mm hmm" ;;
    uh-huh) echo "uh huh" ;;
    *) echo "$1" ;;
  esac
}

# espeak-ng text -> 8 kHz mono 32-bit float raw, band-limited like a phone line.
render() { # voice wpm pitch text out.f32
  espeak-ng -v "$1" -s "$2" -p "$3" -w "$work/tmp.wav" "$(spoken "$4")"
  sox -D "$work/tmp.wav" -t f32 -r 8000 -c 1 "$5" sinc 300-3400 rate -v 8000
}

rm -f "$out"/*.wav "$out/manifest.tsv"
mkdir -p "$out"
printf 'file\tvoice\tkind\ttext\n' >"$out/manifest.tsv"

for entry in "${voices[@]}"; do
  IFS=: read -r id voice wpm pitch <<<"$entry"
  for clip in "${clips[@]}"; do
    IFS='|' read -r name kind text second <<<"$clip"
    file="${id}_${name}.wav"
    parts=("$work/part1.f32")
    # An interruption is blurted out: faster, so it lasts about a second.
    rate="$wpm"
    [[ "$kind" == interruption ]] && rate=$((wpm * 3 / 2))
    render "$voice" "$rate" "$pitch" "$text" "$work/part1.f32"
    full="$text"
    if [[ -n "${second:-}" ]]; then
      render "$voice" "$rate" "$pitch" "$second" "$work/part2.f32"
      parts+=("$work/part2.f32")
      full="$text $second"
    fi
    python3 "$root/scripts/corpus/finish.py" "$out/$file" "${parts[@]}"
    printf '%s\t%s\t%s\t%s\n' "$file" "$voice" "$kind" "$full" >>"$out/manifest.tsv"
  done
done

du -cb "$out"/*.wav | tail -1
