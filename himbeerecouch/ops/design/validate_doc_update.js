// Every write to the database passes here (rules.js says who may write what).
function (newDoc, oldDoc, userCtx, secObj) {
  // @include settings
  // @include classify
  // @include rules
  check(newDoc, oldDoc, userCtx, secObj || {});
}
