// Validates a jambonz application (a verb array, JSON on stdin) with jambonz's own validator.
// Exit 0 and "valid" on stdout when jambonz would accept it; exit 1 and "invalid: <reason>"
// otherwise. With --each, stdin is an array of applications: one such line for each, and
// exit 1 when any is invalid.
'use strict';
const {validate} = require('@jambonz/verb-specifications');

const logger = {info() {}, debug() {}, error() {}, warn() {}};

function verdict(application) {
  try {
    validate(logger, application);
    return 'valid';
  } catch (err) {
    return `invalid: ${err.message}`;
  }
}

let text = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => { text += chunk; });
process.stdin.on('end', () => {
  let input;
  try {
    input = JSON.parse(text);
  } catch (err) {
    process.stdout.write(`invalid: not JSON: ${err.message}\n`);
    process.exit(1);
  }
  const each = process.argv.includes('--each');
  const verdicts = each ? input.map(verdict) : [verdict(input)];
  process.stdout.write(verdicts.map((line) => line.replace(/\n/g, ' ')).join('\n') + '\n');
  process.exit(verdicts.every((line) => line === 'valid') ? 0 : 1);
});
