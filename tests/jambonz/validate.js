// Validates a jambonz verb array (JSON on stdin) with jambonz's own validator.
// Exit 0 and "valid" on stdout when jambonz would accept it; exit 1 and the reason otherwise.
'use strict';
const {validate} = require('@jambonz/verb-specifications');

const logger = {info() {}, debug() {}, error() {}, warn() {}};
let text = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => { text += chunk; });
process.stdin.on('end', () => {
  try {
    validate(logger, JSON.parse(text));
  } catch (err) {
    process.stdout.write(`invalid: ${err.message}\n`);
    process.exit(1);
  }
  process.stdout.write('valid\n');
});
