// Module hooks for testing wrun.js under Node: the `wrun:operator/*`
// imports (provided by the host inside a component) resolve to fakes.
const fakes = {
  'wrun:operator/state@0.2.1': new URL('./fake-state.mjs', import.meta.url).href,
  'wrun:operator/log@0.2.1': new URL('./fake-log.mjs', import.meta.url).href,
  'wrun:operator/timers@0.2.1': new URL('./fake-timers.mjs', import.meta.url).href,
};

export async function resolve(specifier, context, next) {
  if (specifier in fakes) return { url: fakes[specifier], shortCircuit: true };
  return next(specifier, context);
}
